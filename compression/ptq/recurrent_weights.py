"""Recurrent layers' weights stored int8 in the int8 program.

torchao's x86 recipe has no recurrent layer: a CRNN's GRU or a speech model's LSTM kept its weights in float32
(half of the sweep's CRNN, which the stage warned about). Each 2-D weight a recurrent op reads (`weight_ih`,
`weight_hh`; the biases stay float) becomes int8 codes with one scale per row (per gate unit, as PyTorch's dynamic
int8 LSTM/GRU quantizes them), dequantized in the graph right before the op. The program gets smaller and computes
with the dequantized values; the recurrence itself still runs in float, as no int8 kernel exists on this path.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.embeddings import quantize_rows_int8
from compression.quant.graph import get_tensor

aten = torch.ops.aten
# the `.input` overloads are what nn.GRU / nn.LSTM / nn.RNN export to (the `.data` ones take packed sequences)
RECURRENT_OPS = (aten.gru.input, aten.lstm.input, aten.rnn_tanh.input, aten.rnn_relu.input)
PARAMS_ARG = 2  # each op's list of weights and biases


def quantize_recurrent_weights(gm: fx.GraphModule) -> list[str]:
    """Rewrite, in place, every float 2-D weight that only recurrent ops read as int8 codes and per-row scales
    dequantized before the op; returns the weights' attribute names."""
    readers: dict[str, set] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers.setdefault(node.target, set()).update(user.target for user in node.users)
    done: dict[str, tuple[str, str, torch.dtype]] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in RECURRENT_OPS:
            continue
        params = list(node.args[PARAMS_ARG])
        for index, param in enumerate(params):
            if not (isinstance(param, fx.Node) and param.op == "get_attr"
                    and readers[param.target] <= set(RECURRENT_OPS)):
                continue
            weight = get_tensor(gm, param.target)
            if not (isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.is_floating_point()):
                continue
            if param.target not in done:
                done[param.target] = (*_register(gm, param.target, weight), weight.dtype)
            params[index] = _dequantized(gm.graph, node, *done[param.target])
        node.args = (*node.args[:PARAMS_ARG], params, *node.args[PARAMS_ARG + 1:])
    gm.graph.eliminate_dead_code()
    for attr in done:
        owner, _, leaf = attr.rpartition(".")
        delattr(gm.get_submodule(owner) if owner else gm, leaf)
    gm.recompile()
    return sorted(done)


def _register(gm: fx.GraphModule, attr: str, weight: torch.Tensor) -> tuple[str, str]:
    codes, scale = quantize_rows_int8(weight.detach().float())
    owner, _, leaf = attr.rpartition(".")
    holder = gm.get_submodule(owner) if owner else gm
    holder.register_buffer(f"{leaf}_codes", codes)
    holder.register_buffer(f"{leaf}_scale", scale.flatten())  # 1-D: a scale, not a weight, for the float report
    prefix = f"{owner}." if owner else ""
    return f"{prefix}{leaf}_codes", f"{prefix}{leaf}_scale"


def _dequantized(graph: fx.Graph, before: fx.Node, codes_attr: str, scale_attr: str, dtype: torch.dtype) -> fx.Node:
    with graph.inserting_before(before):
        values = graph.call_function(aten._to_copy.default, (graph.get_attr(codes_attr),), {"dtype": torch.float32})
        scale = graph.call_function(aten.unsqueeze.default, (graph.get_attr(scale_attr), 1))
        weight = graph.call_function(aten.mul.Tensor, (values, scale))
        if dtype != torch.float32:
            weight = graph.call_function(aten._to_copy.default, (weight,), {"dtype": dtype})
    return weight
