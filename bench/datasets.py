"""Real datasets for the benchmarks, all local: nothing is downloaded.

Each loader returns arrays named like an upload (`train.x`, `train.y`, `test.x`, `test.y`), so they go straight
into `compression.data.Dataset.from_arrays` or `numpy.savez`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# IDX magic numbers: 0x0000 08 03 = unsigned bytes, 3 dimensions (images); 08 01 = 1 dimension (labels).
_IDX_IMAGES, _IDX_LABELS = 0x00000803, 0x00000801


def fashion_mnist(root: str | Path = FASHION_MNIST_ROOT) -> dict[str, np.ndarray]:
    """Fashion-MNIST as {"train.x": float32 [60000, 1, 28, 28], "train.y": int64 [60000], "test.x", "test.y"}.

    Pixels are scaled to [0, 1], then standardised with the training set's mean and standard deviation.
    Reads the IDX files of the Debian package `dataset-fashion-mnist`, gzipped or not.
    """
    root = Path(root)
    arrays = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = _read_idx(_find(root, images_name), _IDX_IMAGES)
        labels = _read_idx(_find(root, labels_name), _IDX_LABELS)
        if len(images) != len(labels):
            raise ValueError(f"{root}: {split} has {len(images)} images but {len(labels)} labels")
        arrays[f"{split}.x"] = images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
        arrays[f"{split}.y"] = labels.astype(np.int64)
    mean, std = arrays["train.x"].mean(), arrays["train.x"].std()
    for split in FASHION_MNIST_FILES:
        arrays[f"{split}.x"] = (arrays[f"{split}.x"] - mean) / std
    return arrays


def digits(val_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits: {"train.x", "train.y", "val.x", "val.y"} (see compression.examples)."""
    from compression.examples import digits_dataset

    return digits_dataset(val_fraction, seed)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST file {name}(.gz) not found under {root}; install the dataset with "
                            "`apt-get update && apt-get install -y dataset-fashion-mnist`")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {found:#x}, wanted {magic:#x})")
    dimensions = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dimensions)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)
