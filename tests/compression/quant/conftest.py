import numpy as np
import pytest
import torch
from torch import nn

from compression.data import Dataset
from compression.task import Task


class TinyCNN(nn.Module):
    """conv-bn-relu, strided conv, linear head on 12x12 images: every kind of layer PTQ handles, in a few ms."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(x))))).flatten(1))


def tiny_cnn(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN()
    model.bn1.running_mean.uniform_(-0.3, 0.3)
    model.bn1.running_var.uniform_(0.5, 2.0)
    return model.eval()


def labelled_by(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """Labels the float model gets 100% right: accuracy drops are then purely quantization's doing."""
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).argmax(-1).numpy()


def make_task(model: nn.Module, input_shape: tuple[int, ...], workdir, samples: int = 256) -> Task:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val"):
        x = rng.standard_normal((samples, *input_shape)).astype(np.float32)
        arrays[f"{split}.x"], arrays[f"{split}.y"] = x, labelled_by(model, x)
    dataset = Dataset.from_arrays(arrays, ["x"])
    example = torch.from_numpy(arrays["train.x"][:4])
    return Task(dataset=dataset, reference=model, example_inputs=(example,), workdir=workdir)


@pytest.fixture
def cnn_task(tmp_path):
    model = tiny_cnn()
    return model, make_task(model, (1, 12, 12), tmp_path)
