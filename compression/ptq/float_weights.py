"""What an int8 program left in float: a stage that quantized a few layers while most of the weights stayed fp32
must say so, not read as done.

Found by a mixture of experts exported with transformers' `batched_mm` experts: its stacked 3-D expert tensors
are read by `index` + `bmm`, not by a linear layer, so int8 PTQ quantized the attention and the router (11
layers), the program was 1.2x smaller, and the stage reported success.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.graph_ops import op_name
from compression.quant.graph import get_tensor

# More than this share of the weight elements left in float by operations the recipe cannot quantize gets a
# warning. Weights of linear, convolution and embedding ops left float are the job's own choice (`exclude`,
# `embeddings: null`) and reported as such elsewhere (`float_layers`).
MAX_FLOAT_SHARE = 0.5
# What the x86 int8 recipe quantizes (torchao's X86InductorQuantizer annotates conv1d, conv2d and linear; tables
# are ours). Conv3d, transposed-conv and recurrent weights are stored int8 after it (`kernelless_weights.py`); one
# of them still float (read by another op too) counts here.
QUANTIZABLE_READERS = frozenset({"linear", "conv1d", "conv2d", "embedding"})
# The general path's layers (`compression.quant.graph.find_layers`) and tables
GENERAL_PATH_READERS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "embedding"})
INT8_RECIPE = "int8 PTQ quantizes 1-D and 2-D convolution and linear layers with stored weights and embedding tables"
GENERAL_RECIPE = "the general PTQ path quantizes convolution and linear layers with stored weights and embedding tables"
SHOWN = 3


def float_weight_report(graph: fx.GraphModule, quantizable_readers: frozenset = QUANTIZABLE_READERS) -> dict:
    """Over the weight elements the graph reads (tensors of 2 or more dimensions): {"float_share": the share stored
    in a float dtype, "unquantizable_share": the share stored float and read by operations other than linear,
    convolution and embedding layers, "largest_unquantizable": the largest of those, as "name [shape] read by
    op", "unquantizable_readers": the ops that read them}."""
    seen: set[int] = set()
    total = floating = 0
    others: list[tuple[int, str]] = []
    other_readers: set[str] = set()
    for node in graph.graph.nodes:
        if node.op != "get_attr":
            continue
        tensor = get_tensor(graph, node.target)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2 or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel()
        if not tensor.is_floating_point():
            continue
        floating += tensor.numel()
        readers = sorted({op_name(user) for user in node.users})
        if not set(readers) <= quantizable_readers:
            others.append((tensor.numel(), f"{node.target} {list(tensor.shape)} read by {', '.join(readers)}"))
            other_readers.update(readers)
    others.sort(key=lambda item: -item[0])
    return {"float_share": round(floating / total, 4) if total else 0.0,
            "unquantizable_share": round(sum(n for n, _ in others) / total, 4) if total else 0.0,
            "largest_unquantizable": [described for _, described in others[:SHOWN]],
            "unquantizable_readers": sorted(other_readers)}


def float_weight_warning(report: dict, recipe: str = INT8_RECIPE) -> str | None:
    """The warning for a program that left most of its weights float, or None; `recipe` says what it quantizes."""
    if report["unquantizable_share"] <= MAX_FLOAT_SHARE:
        return None
    shown = "; ".join(report["largest_unquantizable"])
    return (f"{report['unquantizable_share']:.0%} of the model's weights stay float: {recipe}, and these tensors "
            f"are read by other operations ({shown}).{_hint(set(report['unquantizable_readers']))}")


RECURRENT_READERS = {"gru", "lstm", "rnn_tanh", "rnn_relu"}
TRANSPOSED_READERS = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}


def _hint(readers: set[str]) -> str:
    if "conv3d" in readers:
        return (" 3-D convolutions have no int8 kernel in this recipe: the weight-only path (`activations: null`, "
                "`weights: {bits: 8}` or 4) quantizes their weights")
    if readers & (RECURRENT_READERS | TRANSPOSED_READERS):
        return (" The default int8 recipe (`{\"method\": \"ptq\"}`) stores recurrent layers' and transposed "
                "convolutions' weights int8")
    if readers & {"bmm", "index", "index_select"}:
        return (" A mixture of experts exported with stacked expert tensors is one such model: upload its Hugging "
                "Face folder instead, whose experts run as linear layers")
    return ""
