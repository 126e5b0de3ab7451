"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (files under /usr/share/datasets/fashion-mnist/),
read from its IDX files; nothing is downloaded."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 1, 28, 28] normalised to zero mean / unit variance, labels int64 [N])."""
    if not ROOT.exists():
        raise FileNotFoundError(f"{ROOT} missing: apt-get install -y dataset-fashion-mnist")
    images_file, labels_file = FILES[split]
    images = _read_idx(ROOT / images_file, 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    labels = _read_idx(ROOT / labels_file, 8).astype(np.int64)
    return (images - 0.2860) / 0.3530, labels
