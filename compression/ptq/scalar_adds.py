"""`layer(x) + number` written with aten.add.Scalar before int8 quantization.

torchao's x86 quantizer fuses a linear or conv with the `add` after it and takes the add's other argument for a
tensor (a second input, quantized with the sum). Exported, `linear(x) + 1.0` is `aten.add.Tensor` with a Python
number there, and the quantizer's `assert isinstance(extra_input_node, Node)` failed the job's dry run (Gemma 3n's
per-layer projection adds 1.0 to a linear's output). The quantizer finds its patterns by the Python function a
node was traced from (`source_fn_stack` or `torch_fn`: `add`); the rewritten add computes the same sum with the Scalar
overload and without that record, so the layer is quantized alone and the add stays float.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.quant.graph import CONVOLUTION_CALLS, LINEAR_OPS

aten = torch.ops.aten
_LAYER_CALLS = LINEAR_OPS | CONVOLUTION_CALLS


def scalar_adds_after_layers(graph: fx.GraphModule) -> int:
    """Rewrite, in place, each `aten.add.Tensor(layer output, number)` (or `(number, layer output)`, without an
    alpha) as `aten.add.Scalar(layer output, number)`; returns how many."""
    rewritten = 0
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target != aten.add.Tensor or len(node.args) != 2 \
                or node.kwargs.get("alpha", 1) != 1:
            continue
        first, second = node.args
        if isinstance(first, (int, float)) and isinstance(second, fx.Node):
            first, second = second, first
        if isinstance(first, fx.Node) and first.target in _LAYER_CALLS and isinstance(second, (int, float)) \
                and not isinstance(second, bool):
            node.target, node.args, node.kwargs = aten.add.Scalar, (first, second), {}
            # The quantizer finds its patterns by the Python function each node was traced from.
            node.meta.pop("source_fn_stack", None)
            node.meta.pop("torch_fn", None)
            rewritten += 1
    if rewritten:
        graph.recompile()
    return rewritten
