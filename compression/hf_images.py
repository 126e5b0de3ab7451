"""Image classifiers uploaded as Hugging Face folders (task `image-classification`: ViT, DeiT, Swin, ResNet,
ConvNeXt, MobileNet, EfficientNet, ...), run through the ordinary `.pt2` pipeline on an `.npz` of images.

The folder's model is exported with one input, `pixel_values` [batch, channels, height, width], and a dynamic
batch, from the dataset's first rows. The `.npz` gives per split either the pixel values the model takes (floats,
as the folder's image processor makes them) or raw uint8 images at the model's size (channels-last as image
libraries give them, or channels-first), which are rescaled and normalized here as the folder's
`preprocessor_config.json` declares (`compression.archive.pixel_scaling`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compression.archive.errors import InvalidUpload
from compression.archive.npz import LABEL_ARRAY
from compression.archive.pixel_scaling import NO_PROCESSOR, PIXEL_DTYPE, PixelScaling

EXAMPLE_ROWS = 2


def _input_key(arrays, split: str) -> str:
    """The split's one image array (a single-input model takes it whatever its name, as `bind_inputs` does)."""
    names = [name for name in arrays.files if name.startswith(f"{split}.") and name != f"{split}.{LABEL_ARRAY}"]
    if len(names) != 1:
        raise InvalidUpload(f"split '{split}' needs exactly one image array besides its labels (found {names})")
    return names[0]


def image_dataset(dataset_path: Path, scaling: PixelScaling | None, channels: int, workdir: Path) -> Path:
    """The `.npz` the job runs on: the upload itself when its images are float pixel values; else a copy in
    `workdir` whose uint8 images are the pixel values `scaling` makes of them."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        raw = [name for name in arrays.files if not name.endswith(f".{LABEL_ARRAY}")
               and arrays[name].dtype == np.dtype(PIXEL_DTYPE)]
        if not raw:
            return dataset_path
        if scaling is None:
            raise InvalidUpload(f"'{raw[0]}' {NO_PROCESSOR}")
        converted = {name: scaling.apply(arrays[name], channels) if name in raw else arrays[name]
                     for name in arrays.files}
    path = workdir / "dataset.npz"
    np.savez(path, **converted)
    return path


def image_rows(dataset_path: Path, split: str, rows: int = 8) -> tuple[torch.Tensor, ...]:
    """The first `rows` images of a split of the job's dataset, as the program's input (float32; a one-channel
    model's [N, H, W] images get their channel dimension, as the dataset loader gives them)."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        pixels = np.asarray(arrays[_input_key(arrays, split)][:rows], np.float32)
    return (torch.from_numpy(pixels[:, None] if pixels.ndim == 3 else pixels),)


def image_folder_to_program(folder: Path, task: str, dataset_path: Path, split: str,
                            program_path: Path) -> tuple[torch.Tensor, ...]:
    """Write the folder's model as a `.pt2` exported on the first rows of `split`; returns those example inputs."""
    from compression.hf_program import load_folder_model, model_program
    from compression.io import save_program

    example = image_rows(dataset_path, split, EXAMPLE_ROWS)
    save_program(model_program(load_folder_model(folder, task), example), program_path)
    return example
