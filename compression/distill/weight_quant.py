"""Weight quantizers used while training (inserted by `AttachedQuantizers`; the full-precision tensor stays the
parameter the optimizer updates).

- `UniformWeightQuantizer` (quantized distillation): min-max affine quantization per bucket of consecutive weights
  of each row, recomputed from the current shadow weights every forward; straight-through gradient to the
  shadow weights; optional stochastic rounding while gradients are recorded (training), deterministic otherwise.
- `CodebookWeightQuantizer` (differentiable quantization): every weight is replaced by the nearest of 2^bits
  learned points; the points are the trainable parameters and each receives the summed gradient of its members.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from compression.quant.affine import fake_quantize
from compression.quant.weights import WeightFormat, integer_qparams

# torch.quantile refuses inputs above 2^24 elements; a strided sample of that size gives the same quantiles to
# well within one quantization step.
_QUANTILE_SAMPLE = 1 << 24


def bucketed_format(bits: int, bucket_size: int, weight: Tensor) -> WeightFormat:
    """Polino's uniform quantization with bucketing for `weight`: asymmetric min-max per group of `bucket_size`
    consecutive weights of a row. A bucket longer than the row shrinks to the row (one scale per output channel)
    rather than zero-padding every row up to the bucket size."""
    row_length = weight[0].numel() if weight.dim() >= 2 else weight.numel()
    return WeightFormat(dtype="int", bits=bits, symmetric=False, granularity="per_group",
                        group_size=min(bucket_size, row_length), range="minmax")


class UniformWeightQuantizer(nn.Module):
    def __init__(self, fmt: WeightFormat, stochastic: bool = False):
        super().__init__()
        self.fmt = fmt
        self.stochastic = stochastic

    def forward(self, weight: Tensor) -> Tensor:
        params = integer_qparams(weight.detach(), self.fmt)
        # Stochastic rounding is a training-time regulariser; evaluation and export must be deterministic.
        return fake_quantize(weight, params, stochastic=self.stochastic and torch.is_grad_enabled())


def quantile_points(weight: Tensor, count: int) -> Tensor:
    """`count` points at the (j + 1/2) / count quantiles of the weight values (sorted ascending)."""
    values = weight.detach().reshape(-1).float()
    if values.numel() > _QUANTILE_SAMPLE:
        values = values[:: math.ceil(values.numel() / _QUANTILE_SAMPLE)]
    levels = (torch.arange(count, dtype=torch.float32, device=values.device) + 0.5) / count
    return torch.quantile(values, levels)


def nearest_point_indices(weight: Tensor, sorted_points: Tensor) -> Tensor:
    """Index of the nearest point for every weight (points sorted ascending); O(n log k) memory-light."""
    midpoints = (sorted_points[1:] + sorted_points[:-1]) / 2
    return torch.bucketize(weight.detach().contiguous(), midpoints.detach().contiguous())


class CodebookWeightQuantizer(nn.Module):
    def __init__(self, weight: Tensor, bits: int):
        super().__init__()
        self.bits = bits
        self.points = nn.Parameter(quantile_points(weight, 2**bits))

    def sorted_points(self) -> Tensor:
        # Gradient steps may swap two points; sorting (differentiable in the values) keeps nearest-point search valid.
        return torch.sort(self.points).values

    def forward(self, weight: Tensor) -> Tensor:
        points = self.sorted_points()
        return points[nearest_point_indices(weight, points)]

    def encode(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(indices in the weight's shape, sorted codebook) of the final quantized weight."""
        points = self.sorted_points().detach()
        return nearest_point_indices(weight, points), points


def quantizable_weights(model: nn.Module, skip: list[str]) -> list[str]:
    """Names of the weight matrices / kernels (parameters with >= 2 dims), minus `skip`; others stay float."""
    names = [name for name, parameter in model.named_parameters() if parameter.dim() >= 2]
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise ValueError(f"skip names {unknown} are not quantizable weights; those are {names}")
    return [name for name in names if name not in skip]


def owner_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, leaf = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), leaf


_QUANTIZER_PREFIX = "_distill_weight_quantizer_"


class AttachedQuantizers:
    """Weight quantizers inserted into a model; `detach` takes them out again.

    On a plain module each is a `parametrize` parametrization. On an exported graph each sits as a `call_module`
    node between the weight's `get_attr` and its users: torchao's train/eval rewrite (still the fallback of
    `compression.modes`) deletes every submodule the graph does not reference, parametrizations included, so there
    the graph itself references the quantizer.
    Either way the parameter the optimizer sees stays the full-precision (shadow) weight.
    """

    def __init__(self, model: nn.Module, names: list[str], make_quantizer):
        self.model = model
        self.graph = isinstance(model, torch.fx.GraphModule)
        self.quantizers: dict[str, nn.Module] = {}
        for index, name in enumerate(names):
            owner, leaf = owner_of(model, name)
            weight = getattr(owner, leaf)
            quantizer = make_quantizer(weight).to(weight.device)
            self.quantizers[name] = quantizer
            if self.graph:
                self._insert(name, f"{_QUANTIZER_PREFIX}{index}", quantizer)
            else:
                parametrize.register_parametrization(owner, leaf, quantizer)
        if self.graph:
            model.recompile()

    def _insert(self, name: str, module_name: str, quantizer: nn.Module) -> None:
        self.model.add_submodule(module_name, quantizer)
        graph = self.model.graph
        for node in [n for n in graph.nodes if n.op == "get_attr" and n.target == name]:
            with graph.inserting_after(node):
                quantized = graph.call_module(module_name, (node,))
            node.replace_all_uses_with(quantized, delete_user_cb=lambda user: user is not quantized)

    def shadow(self, name: str) -> Tensor:
        """The full-precision parameter behind quantized weight `name`."""
        owner, leaf = owner_of(self.model, name)
        return owner.parametrizations[leaf].original if not self.graph else getattr(owner, leaf)

    def detach(self, bake: bool) -> None:
        """Remove the quantizers; with `bake` each parameter first takes its quantized value."""
        for name, quantizer in self.quantizers.items():
            owner, leaf = owner_of(self.model, name)
            if not self.graph:
                parametrize.remove_parametrizations(owner, leaf, leave_parametrized=bake)
                continue
            if bake:
                with torch.no_grad():
                    getattr(owner, leaf).copy_(quantizer(getattr(owner, leaf)))
        if self.graph:
            graph = self.model.graph
            targets = {f"{_QUANTIZER_PREFIX}{index}" for index in range(len(self.quantizers))}
            for node in [n for n in graph.nodes if n.op == "call_module" and n.target in targets]:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
            for target in targets:
                delattr(self.model, target)
            self.model.recompile()
