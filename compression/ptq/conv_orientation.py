"""Convolutions over a tall, one-pixel-wide input turned on their side before quantizing.

Audio CNNs written with `nn.Conv2d` run 1-D convolutions as (k, 1) kernels over [N, C, time, 1] (CREPE: kernels of
512 and 64 taps). oneDNN's kernels are slow in that orientation and much faster in the other one, (1, k) over
[N, C, 1, time] (the layout `conv1d.py` gives 1-D convolutions): on CREPE-shaped layers, compiled, one thread,
batch 32, 101 -> 43 ms in fp32 and 69 -> 12 ms in int8 (measured side by side on the shared machine). The
rewrite is exact: conv2d(x, w) == conv2d(x^T, w^T)^T with stride, padding and dilation swapped, where ^T swaps the
last two axes; a transpose of a one-wide tensor is a view.

Float programs a stage writes (pruned models, distilled students) are turned the same way
(`float_program_on_its_side`), each weight in place under its own name: CREPE's structurally pruned model has 103
channels in its first conv, a count for which oneDNN's tall kernel is 6x slower than its kernel on the side
(`python -m bench.conv_channel_counts`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import fx
from torch.export import ExportedProgram

from compression.io import export_model
from compression.ptq.graph_rewrites import as_pair, conv_arguments, new_weight, rewrite_calls, stored_tensor

_CONV2D = torch.ops.aten.conv2d.default
_TRANSPOSE = torch.ops.aten.transpose.int


def tall_convs_on_their_side(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every `aten.conv2d` with a stored (k, 1) weight (k > 1) over a one-wide input and no
    padding across it; returns how many were rewritten. Needs the traced shapes (an exported graph); the graph
    must be re-exported afterwards (the new nodes carry none)."""
    return rewrite_calls(graph, _CONV2D, _on_its_side)


def float_program_on_its_side(program: ExportedProgram, example_inputs: tuple[torch.Tensor, ...]
                              ) -> tuple[ExportedProgram, int]:
    """`program` (float, eval mode) with its tall convs turned, re-exported, and how many were turned. Each turned
    weight is transposed in place under its own name, so the state dict keeps its keys and its bytes; a weight
    that another node also reads is left tall."""
    if not any(node.target == _CONV2D for node in program.graph.nodes):
        return program, 0  # no conv at all (a transformer): not worth unlifting the program to look
    graph = program.module()
    turned = rewrite_calls(graph, _CONV2D, partial(_on_its_side, in_place=True))
    return (export_model(graph, example_inputs) if turned else program), turned


def export_on_their_side(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                         metrics: dict) -> ExportedProgram:
    """A float model (eval mode) exported with its tall convs turned (`float_program_on_its_side`), the count in
    `metrics` as "tall_convs_on_their_side" when any was. The turn only makes the program faster: if re-exporting
    the turned graph fails, the program is kept as exported and `metrics` says why."""
    exported = export_model(model, example_inputs)
    try:
        program, turned = float_program_on_its_side(exported, example_inputs)
    except Exception as exc:
        metrics["tall_convs_left_tall"] = f"{type(exc).__name__}: {exc}"[:300]
        return exported
    if turned:
        metrics["tall_convs_on_their_side"] = turned
    return program


def _on_its_side(graph: fx.GraphModule, node: fx.Node, in_place: bool = False) -> fx.Node | None:
    inputs, weight, bias, stride, padding, dilation, groups = conv_arguments(node, _CONV2D)
    stored = stored_tensor(graph, weight)
    shape = getattr(inputs.meta.get("val"), "shape", None) if isinstance(inputs, fx.Node) else None
    if stored is None or shape is None or len(shape) != 4 or stored.dim() != 4:
        return None
    stride, padding, dilation = as_pair(stride), as_pair(padding), as_pair(dilation)
    if not (stored.shape[2] > 1 and stored.shape[3] == 1 and shape[3] == 1 and padding[1] == 0):
        return None
    if in_place and len(weight.users) > 1:
        return None
    turned = stored.detach().transpose(2, 3).contiguous()
    with graph.graph.inserting_before(node):
        side_weight = _turn_in_place(graph, weight, stored, turned) if in_place else \
            new_weight(graph, weight, "on_its_side", turned)
        side_inputs = graph.graph.call_function(_TRANSPOSE, (inputs, 2, 3))
        conv = graph.graph.call_function(_CONV2D, (side_inputs, side_weight, bias, stride[::-1], padding[::-1],
                                                   dilation[::-1], groups))
        output = graph.graph.call_function(_TRANSPOSE, (conv, 2, 3))
    if "nn_module_stack" in node.meta:
        # The conv stays its Conv2d's (the quantizer finds convs by their module); the transposes belong to the
        # enclosing module, outside the conv's partition.
        stack = dict(node.meta["nn_module_stack"])
        conv.meta["nn_module_stack"] = dict(stack)
        side_inputs.meta["nn_module_stack"] = output.meta["nn_module_stack"] = dict(list(stack.items())[:-1])
    return output


def _turn_in_place(graph: fx.GraphModule, weight: fx.Node, stored: torch.Tensor, turned: torch.Tensor) -> fx.Node:
    owner_path, _, attribute = weight.target.rpartition(".")
    owner = graph.get_submodule(owner_path) if owner_path else graph
    if attribute in owner._parameters:
        owner.register_parameter(attribute, torch.nn.Parameter(turned, requires_grad=stored.requires_grad))
    elif attribute in owner._buffers:
        owner._buffers[attribute] = turned
    else:  # a constant the program stores as a plain attribute
        setattr(owner, attribute, turned)
    return weight
