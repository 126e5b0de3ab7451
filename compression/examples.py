"""The bundled example: scikit-learn's 8x8 handwritten digits and a small CNN trained on them in seconds.

It is what the demo uploads and what end-to-end tests compress: real data and a real (if small) model, with
nothing to download. Everything is deterministic for a given seed.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from compression import zoo
from compression.io import export_model, save_program

DIGITS_CLASSES = 10


def digits_dataset(val_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """{"train.x", "train.y", "val.x", "val.y"}: images float32 [N, 1, 8, 8] standardised with the training
    mean and standard deviation, labels int64; the split is stratified so every class is in both."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    labels = digits.target.astype(np.int64)
    train_x, val_x, train_y, val_y = train_test_split(images, labels, test_size=val_fraction, random_state=seed,
                                                      stratify=labels)
    mean, std = train_x.mean(), train_x.std()
    return {"train.x": (train_x - mean) / std, "train.y": train_y, "val.x": (val_x - mean) / std, "val.y": val_y}


def write_npz(path: str | Path, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write the digits dataset (or `arrays`) as an upload-ready `.npz`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **(arrays if arrays is not None else digits_dataset()))
    return path


def train_digits_cnn(steps: int = 150, seed: int = 0, width: int = 16, batch_size: int = 64,
                     arrays: dict[str, np.ndarray] | None = None) -> torch.nn.Module:
    """A `small_cnn` trained on the digits training split with Adam; returned in eval mode (~98% val accuracy
    with the defaults). Runs on one thread: the model is so small that synchronising threads costs more than
    the work (100 steps measured here: 0.6 s on one thread, 17 s on two while other processes share the cores)."""
    arrays = arrays if arrays is not None else digits_dataset()
    torch.manual_seed(seed)
    model = zoo.build("small_cnn", in_channels=1, num_classes=DIGITS_CLASSES, image_size=8, width=width).train()
    images, labels = torch.from_numpy(arrays["train.x"]), torch.from_numpy(arrays["train.y"])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    with single_thread():
        for _ in range(steps):
            batch = torch.randint(0, len(images), (batch_size,), generator=generator)
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@contextmanager
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_digits_example(directory: str | Path, steps: int = 150, seed: int = 0,
                         width: int = 16) -> tuple[Path, Path]:
    """Write `digits_cnn.pt2` and `digits.npz` into `directory`; returns (model path, dataset path)."""
    directory = Path(directory)
    arrays = digits_dataset(seed=seed)
    model = train_digits_cnn(steps, seed, width, arrays=arrays)
    model_path = save_program(export_model(model, (torch.from_numpy(arrays["val.x"][:4]),)),
                              directory / "digits_cnn.pt2")
    return model_path, write_npz(directory / "digits.npz", arrays)
