import copy

import numpy as np
import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.data import Dataset
from compression.io import export_model
from compression.modes import eval_mode
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.training import train
from compression.zoo import build


def blobs(n: int, features: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linearly separable-ish Gaussian classes: a small MLP learns them in a few dozen steps."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = (centres[y] + rng.normal(size=(n, features))).astype(np.float32)
    return x, y.astype(np.int64)


def blob_dataset() -> Dataset:
    x, y = blobs(512, 16, 4)
    return Dataset.from_arrays({"train.x": x[:384], "train.y": y[:384], "val.x": x[384:], "val.y": y[384:]},
                               ["x"])


def fresh_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval()


@pytest.fixture(scope="session")
def _trained_mlp_state(tmp_path_factory):
    model, dataset = fresh_mlp(), blob_dataset()
    task = Task(dataset, model, (torch.zeros(2, 16),), tmp_path_factory.mktemp("pretrain"))
    spec = TrainingSpec(steps=60, batch_size=32, lr=5e-3)
    train(model, lambda m, batch, step: nn.functional.cross_entropy(m(*batch.inputs), batch.labels), spec, task,
          RunContext())
    return copy.deepcopy(model.state_dict())


@pytest.fixture
def mlp_task(tmp_path, _trained_mlp_state):
    """A small MLP trained on 4 Gaussian blobs (val accuracy ~1.0) and its task; the model is its own reference."""
    dataset = blob_dataset()
    model = fresh_mlp()
    model.load_state_dict(_trained_mlp_state)
    example = (torch.from_numpy(dataset.split("train").inputs["x"][:8]),)
    return model, Task(dataset=dataset, reference=model, example_inputs=example, workdir=tmp_path)


def exported(model: nn.Module, example_inputs) -> torch.fx.GraphModule:
    return eval_mode(export_model(model.eval(), example_inputs).module())


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that slicing mistakes change outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=generator) - 0.5)


@pytest.fixture(scope="session")
def _resnet_program():
    torch.manual_seed(0)
    model = build("resnet", base_width=8, base_blocks=1)
    randomize_batch_norm(model)
    example = (torch.randn(4, 1, 16, 16),)
    return exported(model, example), example


@pytest.fixture
def resnet_program(_resnet_program):
    """A ResNet with residual adds, identity and projection shortcuts, exported (a fresh copy per test)."""
    graph_module, example = _resnet_program
    return copy.deepcopy(graph_module), example


def resnet_task(tmp_path, images: int = 64) -> tuple[torch.fx.GraphModule, Task]:
    """The exported ResNet (with BatchNorm, so train/eval mode switches rewrite its graph) and random 16x16
    images with random labels: enough to exercise training, not to learn anything."""
    torch.manual_seed(0)
    model = build("resnet", base_width=8, base_blocks=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(images, 1, 16, 16)).astype(np.float32)
    y = rng.integers(0, 10, size=images)
    dataset = Dataset.from_arrays({"train.x": x, "train.y": y, "val.x": x[:16], "val.y": y[:16]}, ["x"])
    example = (torch.from_numpy(x[:4]),)
    return exported(model, example), Task(dataset, model, example, tmp_path)


class CheckpointStore(dict):
    def context(self, **kwargs) -> RunContext:
        return RunContext(save_checkpoint=self.__setitem__, load_checkpoint=self.get, **kwargs)


class LastHidden(nn.Module):
    """A transformers base model as a function of (input_ids, attention_mask) -> last_hidden_state, to export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
