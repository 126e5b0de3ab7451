"""Fashion-MNIST subsets shaped like an upload (`bench.datasets.fashion_mnist` reads the files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.datasets import fashion_mnist
from compression.data import Dataset
from compression.task import Task


def fashion_mnist_subset(train: int | None = None, test: int | None = None, shuffle: bool = True,
                         eval_split: str = "val") -> dict[str, np.ndarray]:
    """`train` training images (a seeded random subset when `shuffle`, else the first ones; all when None) and the
    first `test` test images, as {"train.x", "train.y", "<eval_split>.x", "<eval_split>.y"}."""
    data = fashion_mnist()
    count = len(data["train.y"]) if train is None else train
    order = np.random.default_rng(0).permutation(len(data["train.y"]))[:count] if shuffle else slice(0, count)
    return {"train.x": data["train.x"][order], "train.y": data["train.y"][order],
            f"{eval_split}.x": data["test.x"][:test], f"{eval_split}.y": data["test.y"][:test]}


def example_inputs(arrays: dict[str, np.ndarray], split: str = "train") -> tuple[torch.Tensor, ...]:
    return (torch.from_numpy(arrays[f"{split}.x"][:8]),)


def make_task(arrays: dict[str, np.ndarray], workdir: Path, reference: torch.nn.Module | None = None) -> Task:
    """A method's view of the arrays (input named "x"), with `reference` as teacher / fidelity target."""
    return Task(dataset=Dataset.from_arrays(arrays, ["x"]), reference=reference or torch.nn.Identity(),
                example_inputs=example_inputs(arrays), workdir=workdir)
