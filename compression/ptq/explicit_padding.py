"""Long-kernel convolutions given their zero padding as a separate op before quantizing.

oneDNN's int8 convolution subtracts the input's zero point through a compensation term; with implicit padding the
term differs at every output position whose window overlaps the padding, and its brgemm kernel then computes the
compensation the slow way. With a long kernel most windows overlap the padding: the pretrained PESTO pitch model's
1175-tap, one-channel "Toeplitz" convolution (padding 383) took 0.6-2.2 ms per call at batch 1 in int8 against
0.03 ms for the same conv over an explicitly padded input (oneDNN's verbose log, one thread, three or four runs
each), and made the whole int8 model 7x slower than fp32. With the padding done by `constant_pad_nd`, the conv runs
unpadded (one constant compensation per output channel) and inductor fuses the pad into the input's quantize
kernel. The rewrite is exact: the pad value 0 is quantized to the zero point exactly, which is what implicit
padding stands for.

Short kernels (fewer than 32 taps along each padded axis, e.g. 3x3, 15 taps) are left alone: 1-D kernels of 7-31 taps
ran equally fast in both forms (docs/quantization.md), and a separate pad only copies the input.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.graph_rewrites import as_pair, conv_arguments, rewrite_calls, stored_tensor

_CONV2D = torch.ops.aten.conv2d.default
_PAD = torch.ops.aten.constant_pad_nd.default
# Taps along a padded axis from which the padding is made explicit (measured: see docs/quantization.md).
LONG_KERNEL_TAPS = 32


def pad_long_kernels_explicitly(graph: fx.GraphModule, min_taps: int = LONG_KERNEL_TAPS) -> list[str]:
    """Rewrite, in place, every `aten.conv2d` with a stored weight that pads an axis along which its kernel has
    `min_taps` taps or more as a zero pad followed by the unpadded conv; returns the rewritten layers' names (the
    weight owners, as `compression.quant.graph` names layers). The graph must be re-exported afterwards."""
    names = []

    def rewrite(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
        output = _explicitly_padded(graph, node, min_taps)
        if output is not None:
            target = node.args[1].target
            names.append(target.rpartition(".")[0] or target)
        return output

    rewrite_calls(graph, _CONV2D, rewrite)
    return list(dict.fromkeys(names))  # a module called twice is one layer


def _explicitly_padded(graph: fx.GraphModule, node: fx.Node, min_taps: int) -> fx.Node | None:
    inputs, weight, bias, stride, padding, dilation, groups = conv_arguments(node, _CONV2D)
    stored = stored_tensor(graph, weight)
    if stored is None or stored.dim() != 4 or isinstance(padding, str):
        return None
    padding = as_pair(padding)
    if not any(pad > 0 and taps >= min_taps for pad, taps in zip(padding, stored.shape[2:])):
        return None
    with graph.graph.inserting_before(node):
        # constant_pad_nd lists (before, after) pairs from the last axis: width first, then height.
        padded = graph.graph.call_function(_PAD, (inputs, [padding[1], padding[1], padding[0], padding[0]], 0.0))
        conv = graph.graph.call_function(_CONV2D, (padded, weight, bias, stride, [0, 0], dilation, groups))
    if "nn_module_stack" in node.meta:
        # The conv stays its module's (the quantizer finds convs by their module); the pad belongs to the enclosing
        # module, outside the conv's partition.
        stack = dict(node.meta["nn_module_stack"])
        conv.meta["nn_module_stack"] = dict(stack)
        padded.meta["nn_module_stack"] = dict(list(stack.items())[:-1])
    return conv

