"""Long-kernel convolutions get their padding as a separate op before int8 quantization (oneDNN's int8 conv is
slow with implicit padding and an input zero point, `compression/ptq/explicit_padding.py`); short kernels keep it."""

import torch
import torch.nn.functional as F

from compression.evaluate import tensor_sqnr_db
from compression.io import export_model
from compression.ptq import quantize_int8
from compression.ptq.conv1d import conv1d_as_conv2d
from compression.ptq.explicit_padding import pad_long_kernels_explicitly
from compression.ptq.graph_rewrites import conv_arguments
from compression.ptq.quantize import quantized_layer_count

_CONV2D = torch.ops.aten.conv2d.default
_PAD = torch.ops.aten.constant_pad_nd.default


class _ToeplitzNet(torch.nn.Module):
    """A short-kernel front end, then PESTO's shape of head: a flattened feature map through a one-channel,
    257-tap convolution padded less than "same" (output shorter than input), and a long kernel that is not
    padded."""

    def __init__(self):
        super().__init__()
        self.front = torch.nn.Conv1d(1, 3, 15, padding=7)
        self.toeplitz = torch.nn.Conv1d(1, 1, 257, padding=100, bias=False)
        self.unpadded = torch.nn.Conv1d(1, 2, 65)

    def forward(self, x):
        x = F.leaky_relu(self.front(x), 0.3).flatten(1).unsqueeze(1)  # [N, 1, 3 * 64]
        return self.unpadded(F.leaky_relu(self.toeplitz(x), 0.3))


def _convs(graph: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    return {node.args[1].target.rpartition(".")[0]: node for node in graph.graph.nodes if node.target == _CONV2D}


def test_only_padded_long_kernels_get_a_separate_pad_and_the_graph_computes_the_same():
    torch.manual_seed(0)
    model, x = _ToeplitzNet().eval(), torch.randn(4, 1, 64)
    graph = export_model(model, (x,)).module()
    assert conv1d_as_conv2d(graph) == 3
    assert pad_long_kernels_explicitly(graph) == ["toeplitz"]
    convs = _convs(graph)
    toeplitz = convs["toeplitz"]
    assert conv_arguments(toeplitz, _CONV2D)[4] == [0, 0]
    assert toeplitz.args[0].target == _PAD and toeplitz.args[0].args[1:] == ([100, 100, 0, 0], 0.0)
    assert convs["front"].args[4] == [0, 7] and convs["front"].args[0].target != _PAD  # 15 taps: left alone
    assert convs["unpadded"].args[0].target != _PAD
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-5, atol=1e-6)


def test_int8_quantizes_the_explicitly_padded_conv_and_stays_close_to_fp32():
    torch.manual_seed(0)
    model, x = _ToeplitzNet().eval(), torch.randn(64, 1, 64)
    report = {}
    quantized = quantize_int8(model, (x[:4],), [(x[i:i + 16],) for i in range(0, 64, 16)], report=report)
    assert report["explicitly_padded"] == ["toeplitz"]
    assert quantized_layer_count(quantized) == 3  # the padded long conv is still int8
    # pad -> quantize -> dequantize -> conv with int8 weights and no padding of its own
    padded = [node for node in quantized.graph.nodes if node.target == _CONV2D
              and "dequantize_per_tensor" in str(node.args[0].target)
              and node.args[0].args[0].args[0].target == _PAD]
    assert len(padded) == 1 and conv_arguments(padded[0], _CONV2D)[4] == [0, 0]
    assert "dequantize_per_channel" in str(padded[0].args[1].target)
    with torch.no_grad():
        assert tensor_sqnr_db(model(x), quantized(x)) > 25


def test_a_short_kernel_net_is_not_rewritten():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 4, (1, 31), padding=(0, 15))).eval()
    graph = export_model(model, (torch.randn(2, 3, 8, 80),)).module()
    assert pad_long_kernels_explicitly(graph) == []
    assert pad_long_kernels_explicitly(graph, min_taps=31) == ["2"]
