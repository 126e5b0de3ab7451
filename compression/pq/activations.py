"""int8 activations for "iPQ + int8": the input of every product-quantized layer is quantized in the packed graph.

Each input gets per-tensor affine int8 parameters from its min/max over a few calibration batches (after iPQ
finetuning, as in post-training quantization) and is rounded onto that grid, so the packed model computes what an
int8-activation kernel would. Scale and zero point are constants of the packed graph.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, fx, nn

from compression.pq.layers import WEIGHT_ARGUMENT

QMIN, QMAX = -128, 127


class ActivationQuant(nn.Module):
    """Records min/max while `observing`; afterwards fake-quantizes its input to int8 (per tensor, affine).

    The frozen scale and zero point are plain Python numbers, so export bakes them into the graph as constants
    and the arithmetic below (round, clamp) is ordinary aten ops that any runtime of the program can run.
    """

    def __init__(self):
        super().__init__()
        self.low, self.high = 0.0, 0.0
        self.scale, self.zero_point = 1.0, 0
        self.observing = True

    def forward(self, x: Tensor) -> Tensor:
        if self.observing:
            self.low = min(self.low, float(x.detach().min()))
            self.high = max(self.high, float(x.detach().max()))
            return x
        codes = torch.clamp(torch.round(x / self.scale) + self.zero_point, QMIN, QMAX)
        return (codes - self.zero_point) * self.scale

    def freeze(self) -> None:
        """Fix scale and zero point from the observed range (which always includes 0, so 0 is exact)."""
        self.scale = max((self.high - self.low) / (QMAX - QMIN), torch.finfo(torch.float32).eps)
        self.zero_point = int(round(QMIN - self.low / self.scale))
        self.observing = False


def quantize_layer_inputs(graph_module: fx.GraphModule, weight_names: set[str],
                          calibration: Iterable[tuple[Tensor, ...]]) -> list[str]:
    """Insert an ActivationQuant before every conv/linear whose weight is in `weight_names`, calibrate them on
    `calibration` (batches of model inputs) and freeze them; returns the names of the inserted modules."""
    inserted = []
    for node in list(graph_module.graph.nodes):
        position = WEIGHT_ARGUMENT.get(node.target) if node.op == "call_function" else None
        if position is None or node.target == torch.ops.aten.embedding.default:
            continue  # an embedding's input is token ids, not activations
        weight = node.args[position]
        if not (isinstance(weight, fx.Node) and weight.op == "get_attr" and weight.target in weight_names):
            continue
        name = f"activation_quant_{len(inserted)}"
        graph_module.add_submodule(name, ActivationQuant())
        with graph_module.graph.inserting_before(node):
            quantized = graph_module.graph.call_module(name, (node.args[0],))
        node.replace_input_with(node.args[0], quantized)
        inserted.append(name)
    graph_module.recompile()
    with torch.no_grad():
        for inputs in calibration:
            graph_module(*inputs)
    for name in inserted:
        graph_module.get_submodule(name).freeze()
    return inserted


class _InputRecorder(fx.Interpreter):
    """Runs a graph node by node and adds up x^2 per input feature of the linear layers it was asked about."""

    def __init__(self, graph_module: fx.GraphModule, weight_names: set[str], sums: dict[str, Tensor],
                 counts: dict[str, int]):
        super().__init__(graph_module)
        self.weight_names, self.sums, self.counts = weight_names, sums, counts

    def run_node(self, node):
        if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
            weight = node.args[1]
            if isinstance(weight, fx.Node) and weight.op == "get_attr" and weight.target in self.weight_names:
                _accumulate(weight.target, self.env[node.args[0]], self.sums, self.counts)
        return super().run_node(node)


def _accumulate(name: str, x: Tensor, sums: dict[str, Tensor], counts: dict[str, int]) -> None:
    flat = x.detach().float().reshape(-1, x.shape[-1])
    sums[name] = sums.get(name, 0) + flat.pow(2).sum(0)
    counts[name] = counts.get(name, 0) + flat.shape[0]


def linear_input_second_moments(model: nn.Module, weight_names: set[str],
                                batches: Iterable[tuple[Tensor, ...]]) -> dict[str, Tensor]:
    """{weight name: E[x_j^2] per input feature j} of the linear layers whose weight is in `weight_names`, over
    `batches` of model inputs. Works on exported programs (read through an fx interpreter, the graph is not
    changed) and on plain modules (forward pre-hooks on nn.Linear). Padding tokens count like any other row."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []
    if not isinstance(model, fx.GraphModule):
        for module_name, module in model.named_modules():
            name = f"{module_name}.weight" if module_name else "weight"
            if isinstance(module, nn.Linear) and name in weight_names:
                hooks.append(module.register_forward_pre_hook(
                    lambda _, args, name=name: _accumulate(name, args[0], sums, counts)))
    try:
        with torch.no_grad():
            for inputs in batches:
                if isinstance(model, fx.GraphModule):
                    _InputRecorder(model, weight_names, sums, counts).run(*inputs)
                else:
                    model(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: sums[name] / counts[name] for name in sums}
