import numpy as np
import pytest
import torch
from torch import nn

from compression.data import Dataset
from compression.io import export_model
from compression.modes import eval_mode
from compression.task import Task



def blobs(n: int, features: int, classes: int, seed: int = 0, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian classes around random centres: a small MLP separates them in a few dozen steps."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = (centres[y] + rng.normal(size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 150, lr: float = 1e-2) -> nn.Module:
    """Plain full-batch Adam on cross-entropy: the teachers of these tests."""
    torch.manual_seed(0)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    return model.eval()


def make_task(tmp_path, x, y, reference: nn.Module, train: int, with_val: bool = True) -> Task:
    arrays = {"train.x": x[:train], "train.y": y[:train]}
    if with_val:
        arrays |= {"val.x": x[train:], "val.y": y[train:]}
    return Task(dataset=Dataset.from_arrays(arrays, ["x"]), reference=reference,
                example_inputs=(torch.from_numpy(x[:8]),), workdir=tmp_path)


@pytest.fixture(scope="module")
def blob_data():
    return blobs(768, 16, 4)


@pytest.fixture(scope="module")
def mlp_teacher(blob_data):
    x, y = blob_data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 4))
    return fit(model, x[:512], y[:512])


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 24, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(24)
        self.pointwise = nn.Conv2d(24, 24, 1)
        self.fc = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.relu(self.pointwise(x)).flatten(1))


@pytest.fixture(scope="module")
def conv_net():
    torch.manual_seed(0)
    model = ConvNet().eval()
    example = (torch.randn(4, 3, 8, 8),)
    return model, eval_mode(export_model(model, example).module()), example


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())


def image_task(tmp_path, teacher: nn.Module, n_train: int = 256, n_val: int = 64, labels: bool = False) -> Task:
    """Random 3x8x8 images; labels (optional) are the teacher's own predictions."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(n_train + n_val, 3, 8, 8, generator=generator)
    arrays = {"train.x": images[:n_train].numpy(), "val.x": images[n_train:].numpy()}
    if labels:
        with torch.no_grad():
            predicted = teacher(images).argmax(-1).numpy()
        arrays |= {"train.y": predicted[:n_train], "val.y": predicted[n_train:]}
    return Task(dataset=Dataset.from_arrays(arrays, ["x"]), reference=teacher, example_inputs=(images[:4],),
                workdir=tmp_path)
