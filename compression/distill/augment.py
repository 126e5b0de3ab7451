"""Augmented views for function matching: one view per step, fed to teacher and student alike."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from compression.specs.distill import AugmentSpec


def _is_image(value: Tensor) -> bool:
    return value.is_floating_point() and value.dim() == 4


def make_generator(seed: int) -> torch.Generator:
    """The CPU generator every augmentation draws from (so views depend on the seed only, on any device)."""
    return torch.Generator().manual_seed(seed)


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad [N, C, H, W] by `padding` on every side and crop back to H x W at a random offset per example."""
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    # Drawn on the CPU (where the generator lives) whatever the device of the images.
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    rows = (top[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each [N, C, H, W] example left-right with probability 1/2."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def mixup(inputs: tuple[Tensor, ...], alpha: float, generator: torch.Generator) -> tuple[Tensor, ...]:
    """Blend the batch with itself rolled by one, ratio ~ Beta(alpha, alpha), as big_vision's function matching
    does. Every float input gets the same ratio (so the inputs of one example stay consistent with each other);
    integer inputs (token ids) cannot be blended and pass through."""
    ratio = _beta_sample(alpha, generator)
    return tuple(ratio * value + (1 - ratio) * value.roll(1, dims=0) if value.is_floating_point() else value
                 for value in inputs)


def _beta_sample(alpha: float, generator: torch.Generator) -> float:
    # torch's Beta sampler takes no generator; numpy seeded from ours keeps every view a function of the seed.
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (), generator=generator)))
    return float(rng.beta(alpha, alpha))


def augmented_view(inputs: tuple[Tensor, ...], spec: AugmentSpec, generator: torch.Generator,
                   mix: bool = True) -> tuple[Tensor, ...]:
    """Crop and flip image inputs (one offset and flip per example, shared by all image inputs of that example),
    then mixup when `mix` and `spec.mixup_alpha` > 0."""
    state = generator.get_state()
    view = []
    for value in inputs:
        if _is_image(value):
            # Re-using the generator state gives every image input of an example the same crop and flip.
            generator.set_state(state)
            if spec.crop_padding:
                value = random_crop(value, spec.crop_padding, generator)
            if spec.flip:
                value = random_flip(value, generator)
        view.append(value)
    if mix and spec.mixup_alpha > 0:
        return mixup(tuple(view), spec.mixup_alpha, generator)
    return tuple(view)
