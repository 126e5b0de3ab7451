"""Product-quantized weights and Quant-Noise as `torch.nn.utils.parametrize` parametrizations.

Both compute the weight a layer sees from stored tensors on every access and never write into a parameter, so the
stored full-precision weights survive any number of noisy training steps (unlike fairseq, whose hook overwrote
`weight.data`, fairseq#3783). They work on plain modules and on `torch.export` programs alike, because an exported
graph reads each weight through `get_attr`, which goes through the parametrization.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from compression.pq.kmeans import assign, kmeans
from compression.pq.layers import from_blocks, to_blocks
from compression.quant.affine import fake_quantize, qparams_for

INT8_MAX = 127


def int8_scale(centroids: Tensor) -> Tensor:
    """One symmetric scale per layer's codebook: the largest |value| maps to 127."""
    return centroids.detach().abs().max().clamp_min(torch.finfo(torch.float32).eps) / INT8_MAX


def int8_codes(centroids: Tensor) -> tuple[Tensor, Tensor]:
    scale = int8_scale(centroids)
    return torch.clamp(torch.round(centroids.detach() / scale), -INT8_MAX, INT8_MAX), scale


def as_stored(centroids: Tensor, dtype: str) -> Tensor:
    """Centroids rounded to how the packed file stores them (int8 codes * scale, or float16), with a
    straight-through gradient, so finetuning and evaluation see exactly the values that will be written."""
    if dtype == "int8":
        codes, scale = int8_codes(centroids)
        stored = codes * scale
    elif dtype == "float16":
        stored = centroids.detach().half().float()
    else:
        raise ValueError(f"unknown centroid dtype '{dtype}'")
    return centroids + (stored - centroids).detach()


class _GatherMeanGradient(torch.autograd.Function):
    """centroids[assignments] whose backward gives each centroid the mean (not the sum) of its members' gradients."""

    @staticmethod
    def forward(ctx, centroids: Tensor, assignments: Tensor, counts: Tensor) -> Tensor:
        ctx.save_for_backward(assignments, counts)
        ctx.num_centroids = centroids.shape[0]
        return centroids[assignments]

    @staticmethod
    def backward(ctx, grad_blocks: Tensor):
        assignments, counts = ctx.saved_tensors
        summed = grad_blocks.new_zeros(ctx.num_centroids, grad_blocks.shape[1]).index_add_(0, assignments, grad_blocks)
        return summed / counts.clamp_min(1).unsqueeze(1).to(summed.dtype), None, None


class PQWeight(nn.Module):
    """weight = centroids[assignments] reshaped to the layer's shape; the centroids are the trainable parameters.

    The original weight stays registered by `parametrize` (frozen) but is no longer read. The centroids are used
    as rounded to `centroid_dtype` ("float16" or "int8"), the precision they are packed in.
    """

    def __init__(self, centroids: Tensor, assignments: Tensor, shape: tuple[int, ...],
                 centroid_dtype: str = "float16"):
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().clone())
        self.register_buffer("assignments", assignments.detach().to(torch.long).clone())
        self.register_buffer("counts", torch.bincount(self.assignments, minlength=centroids.shape[0]).float())
        self.shape = tuple(shape)
        self.centroid_dtype = centroid_dtype

    @property
    def block_size(self) -> int:
        return self.centroids.shape[1]

    def codebook(self) -> Tensor:
        return as_stored(self.centroids, self.centroid_dtype)

    def forward(self, original: Tensor) -> Tensor:
        blocks = _GatherMeanGradient.apply(self.codebook(), self.assignments, self.counts)
        return from_blocks(blocks, self.shape).to(original.dtype)


class QuantNoise(nn.Module):
    """On each forward while `enabled`, a random fraction `rate` of the weight's blocks gets quantization noise.

    kind "proxy": those blocks are zeroed and the others scaled by 1/(1 - rate), so E[weight] is unchanged.
    kind "int8"/"int4": those blocks take their per-output-channel symmetric int8/int4 value; "pq": their nearest
    centroid of a codebook fitted once at construction. For the exact kinds the gradient flows straight through.
    While disabled (evaluation) the weight passes through untouched.
    """

    def __init__(self, weight: Tensor, rate: float, kind: str, block_size: int, pq_centroids: int = 256,
                 seed: int = 0):
        super().__init__()
        if kind not in ("proxy", "pq", "int8", "int4"):
            raise ValueError(f"unknown quant-noise kind '{kind}'")
        self.rate, self.kind, self.block_size = rate, kind, block_size
        self.enabled = False
        if kind == "pq":
            blocks = to_blocks(weight.detach(), block_size)
            fit = kmeans(blocks, min(pq_centroids, blocks.shape[0]), seed=seed)
            self.register_buffer("centroids", fit.centroids)

    def quantized(self, weight: Tensor) -> Tensor:
        if self.kind == "pq":
            blocks = to_blocks(weight.detach(), self.block_size)
            nearest, _ = assign(blocks, self.centroids)
            return from_blocks(self.centroids[nearest], weight.shape)
        bits = 8 if self.kind == "int8" else 4
        return fake_quantize(weight.detach(), qparams_for(weight, bits, symmetric=True, narrow=True, axis=0))

    def forward(self, weight: Tensor) -> Tensor:
        if not self.enabled:
            return weight
        blocks = to_blocks(weight, self.block_size)
        noised = torch.rand(blocks.shape[0], 1, device=weight.device) < self.rate
        if self.kind == "proxy":
            return from_blocks(blocks.masked_fill(noised, 0.0) / (1.0 - self.rate), weight.shape)
        target = to_blocks(self.quantized(weight), self.block_size)
        return from_blocks(blocks + (torch.where(noised, target, blocks) - blocks).detach(), weight.shape)


def register(model: nn.Module, name: str, parametrization: nn.Module) -> None:
    owner, _, attribute = name.rpartition(".")
    module = model.get_submodule(owner)
    parametrize.register_parametrization(module, attribute, parametrization, unsafe=True)


def parametrizations_of(model: nn.Module, kind: type) -> dict[str, nn.Module]:
    """{weight name: parametrization} for every parametrization of type `kind` registered in `model`."""
    found = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attribute, chain in module.parametrizations.items():
            for item in chain:
                if isinstance(item, kind):
                    found[f"{module_name}.{attribute}" if module_name else attribute] = item
    return found


def remove(model: nn.Module, name: str, keep_value: bool) -> None:
    """Drop every parametrization of `name`; keep_value=True bakes the current (parametrized) value in."""
    owner, _, attribute = name.rpartition(".")
    parametrize.remove_parametrizations(model.get_submodule(owner), attribute, leave_parametrized=keep_value)


def set_noise(model: nn.Module, enabled: bool) -> None:
    for noise in parametrizations_of(model, QuantNoise).values():
        noise.enabled = enabled


def stored_weight(model: nn.Module, name: str) -> Tensor:
    """The tensor a parametrized weight is computed from (the parameter the optimizer updates)."""
    owner, _, attribute = name.rpartition(".")
    module = model.get_submodule(owner)
    if parametrize.is_parametrized(module, attribute):
        return module.parametrizations[attribute].original
    return getattr(module, attribute)
