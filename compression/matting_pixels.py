"""The pixel values of an image matting model (ViTMatte) from uint8 images with their trimaps, as transformers'
VitMatteImageProcessor makes them: the image's three channels rescaled and normalized, the trimap (0 background,
128 unknown, 255 foreground) rescaled alone, concatenated as four channels, and the whole padded with zeros at the
bottom and right to a multiple of the processor's size divisor (32), which the model's patches and its fusion
stages need."""

from __future__ import annotations

import numpy as np

from compression.archive.errors import InvalidUpload
from compression.archive.hf_architectures import TRIMAP_CHANNELS
from compression.archive.pixel_scaling import PixelScaling, pixel_layout

DEFAULT_DIVISOR = 32  # VitMatteImageProcessor's size_divisor
IMAGE_CHANNELS = 3
CHANNELS = IMAGE_CHANNELS + TRIMAP_CHANNELS


def size_divisor(processor: dict | None) -> int:
    """What the processor pads each side to a multiple of (`size_divisor`, or the older `size_divisibility`)."""
    processor = processor or {}
    if processor.get("do_pad") is False:
        return 1
    value = processor.get("size_divisor", processor.get("size_divisibility"))
    return value if type(value) is int and value > 0 else DEFAULT_DIVISOR


def matting_pixels(name: str, pixels: np.ndarray, scaling: PixelScaling, divisor: int) -> np.ndarray:
    """float32 [N, 4, H', W'] from uint8 [N, H, W, 4] (the trimap last, as an RGBA image stores it) or
    [N, 4, H, W]."""
    layout = pixel_layout(list(pixels.shape), CHANNELS)
    if layout is None:
        raise InvalidUpload(f"'{name}' has shape {list(pixels.shape)}: an image matting model takes each image with "
                            f"its trimap as a fourth channel, uint8 [N, H, W, {CHANNELS}] or [N, {CHANNELS}, H, W] "
                            "(trimap 0 background, 128 unknown, 255 foreground)")
    height, width, order = layout
    first = pixels.transpose(0, 3, 1, 2) if order == "last" else pixels
    image = scaling.apply(np.ascontiguousarray(first[:, :IMAGE_CHANNELS]), IMAGE_CHANNELS)
    trimap = first[:, IMAGE_CHANNELS:].astype(np.float32) * (scaling.rescale if scaling.rescale is not None else 1.0)
    return padded(np.concatenate([image, trimap], 1), divisor)


def padded(values: np.ndarray, divisor: int) -> np.ndarray:
    """[N, C, H, W] with zeros below and right of each image up to a multiple of `divisor` per side."""
    height, width = values.shape[-2:]
    extra = (-height % divisor, -width % divisor)
    if extra == (0, 0):
        return values
    return np.pad(values, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
