import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.data import Dataset
from compression.examples import digits_dataset
from compression.io import export_model
from compression.modes import eval_mode
from compression.task import Task


def digits_cnn() -> nn.Sequential:
    """A digits-sized CNN (8x8 inputs) with batch norm, a 3x3 conv, a 1x1 conv and two linear layers."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 150, lr: float = 3e-3) -> nn.Module:
    torch.manual_seed(0)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(inputs), (64,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(inputs[batch]), labels[batch]).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def digits_arrays() -> dict[str, np.ndarray]:
    return digits_dataset()


@pytest.fixture(scope="session")
def trained_digits_cnn(digits_arrays) -> nn.Module:
    torch.manual_seed(0)
    return fit(digits_cnn(), digits_arrays["train.x"], digits_arrays["train.y"])


@pytest.fixture
def digits_task(tmp_path, digits_arrays, trained_digits_cnn):
    """The trained CNN as an exported program (what an upload is) and its task."""
    example = (torch.from_numpy(digits_arrays["val.x"][:4]),)
    program = eval_mode(export_model(trained_digits_cnn, example).module())
    dataset = Dataset.from_arrays(digits_arrays, ["x"])
    return program, Task(dataset=dataset, reference=program, example_inputs=example, workdir=tmp_path)


@pytest.fixture
def plain_digits_task(tmp_path, digits_arrays, trained_digits_cnn):
    """The trained CNN as a plain module (mode switches are free, unlike an exported program's)."""
    example = (torch.from_numpy(digits_arrays["val.x"][:4]),)
    dataset = Dataset.from_arrays(digits_arrays, ["x"])
    return trained_digits_cnn, Task(dataset=dataset, reference=trained_digits_cnn, example_inputs=example,
                                    workdir=tmp_path)
