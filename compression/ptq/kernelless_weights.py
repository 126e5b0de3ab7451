"""Weights of the layers the int8 recipe has no kernel for, stored int8 in the int8 program.

torchao's x86 quantizer annotates conv1d, conv2d and linear only: a CRNN's GRU, a speech model's LSTM, a video or
volume CNN's `Conv3d` and a decoder's `ConvTranspose2d` kept their weights in float32 (half of the sweep's CRNN,
96 % of its video CNN, which read as done at 1.1x). Each such weight (a recurrent op's 2-D `weight_ih`/`weight_hh`,
a transposed or 3-D convolution's kernel; biases stay float) becomes int8 codes with one scale per slice of its
first dimension (a gate unit, an output channel; a transposed conv's input channel), as PyTorch's dynamic int8
LSTM/GRU quantizes them, dequantized in the graph right before the op. The program gets smaller and computes with
the dequantized values; the op itself still runs in float, as no int8 kernel exists on this path.

An `EmbeddingBag`'s table (a recommender's, DLRM's; `embedding_bag` pools the rows of each bag) is stored the same
way, one scale per row, as `compression.ptq.embeddings` stores a plain embedding's table. Unlike a plain lookup,
which dequantizes only the rows it reads, the whole table is dequantized at every call: fine for the tables of
text and small recommender models; a large recommender's tables would want a pooling kernel over int8 rows (not
written).
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.embeddings import quantize_rows_int8
from compression.ptq.graph_rewrites import register_codes
from compression.quant.graph import delete_tensor, get_tensor

aten = torch.ops.aten
# the `.input` overloads are what nn.GRU / nn.LSTM / nn.RNN export to (the `.data` ones take packed sequences)
RECURRENT_OPS = (aten.gru.input, aten.lstm.input, aten.rnn_tanh.input, aten.rnn_relu.input)
CONV_OPS = (aten.conv3d.default, aten.conv3d.padding, aten.conv_transpose1d.default, aten.conv_transpose2d.input,
            aten.conv_transpose3d.input)
BAG_OPS = (aten.embedding_bag.default, aten.embedding_bag.padding_idx, aten._embedding_bag.default)
PARAMS_ARG, WEIGHT_ARG, TABLE_ARG = 2, 1, 0  # a recurrent op's weights and biases; a convolution's weight; a table


def quantize_kernelless_weights(gm: fx.GraphModule) -> list[str]:
    """Rewrite, in place, every float weight that only such ops read (2-D for recurrent ops) as int8 codes and
    scales dequantized before the op; returns the weights' attribute names."""
    readers: dict[str, set] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers.setdefault(node.target, set()).update(user.target for user in node.users)
    done: dict[str, tuple[str, str, torch.Tensor]] = {}

    def stored_int8(param, rank_ok) -> bool:
        """Whether `param` is such a weight; its codes are registered (once) when it is."""
        if not (isinstance(param, fx.Node) and param.op == "get_attr"
                and readers[param.target] <= set(RECURRENT_OPS + CONV_OPS + BAG_OPS)):
            return False
        weight = get_tensor(gm, param.target)
        if not (isinstance(weight, torch.Tensor) and weight.is_floating_point() and rank_ok(weight.dim())):
            return False
        if param.target not in done:
            done[param.target] = (*_register(gm, param.target, weight), weight)
        return True

    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in RECURRENT_OPS:
            params = list(node.args[PARAMS_ARG])
            for index, param in enumerate(params):
                if stored_int8(param, lambda rank: rank == 2):
                    params[index] = _dequantized(gm.graph, node, *done[param.target])
            node.args = (*node.args[:PARAMS_ARG], params, *node.args[PARAMS_ARG + 1:])
        elif node.target in CONV_OPS and stored_int8(node.args[WEIGHT_ARG], lambda rank: rank >= 3):
            weight = _dequantized(gm.graph, node, *done[node.args[WEIGHT_ARG].target])
            node.args = (*node.args[:WEIGHT_ARG], weight, *node.args[WEIGHT_ARG + 1:])
        elif node.target in BAG_OPS and stored_int8(node.args[TABLE_ARG], lambda rank: rank == 2):
            table = _dequantized(gm.graph, node, *done[node.args[TABLE_ARG].target])
            node.args = (table, *node.args[TABLE_ARG + 1:])
    gm.graph.eliminate_dead_code()
    for attr in done:
        delete_tensor(gm, attr)
    gm.recompile()
    return sorted(done)


def _register(gm: fx.GraphModule, attr: str, weight: torch.Tensor) -> tuple[str, str]:
    codes, scale = quantize_rows_int8(weight.detach().float().reshape(weight.shape[0], -1))
    # the scale 1-D: a scale, not a weight, for the float report
    return register_codes(gm, attr, codes.reshape(weight.shape), scale.flatten())


def _dequantized(graph: fx.Graph, before: fx.Node, codes_attr: str, scale_attr: str,
                 weight: torch.Tensor) -> fx.Node:
    with graph.inserting_before(before):
        values = graph.call_function(aten._to_copy.default, (graph.get_attr(codes_attr),), {"dtype": torch.float32})
        scale = graph.call_function(aten.view.default, (graph.get_attr(scale_attr), [-1] + [1] * (weight.dim() - 1)))
        dequantized = graph.call_function(aten.mul.Tensor, (values, scale))
        if weight.dtype != torch.float32:
            dequantized = graph.call_function(aten._to_copy.default, (dequantized,), {"dtype": weight.dtype})
    return dequantized
