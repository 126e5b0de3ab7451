"""Convolutions padded "same" or "valid" (`aten.conv2d.padding`, as transformers' EfficientNet and Keras ports
have) get numeric padding before int8 quantization: the x86 quantizer refused them and the whole stage failed."""

import torch
from torch import nn

from compression.io import export_model
from compression.ptq import quantize_int8
from compression.ptq.quantize import quantized_layer_count
from compression.ptq.string_padding import numeric_conv_padding


class _StringPadded(nn.Module):
    """Every kind of string padding: odd and even kernels (an even one pads one more element after), dilation,
    depthwise groups, "valid", and a 1-D conv."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 8, 3, padding="same")
        self.depthwise = nn.Conv2d(8, 8, (4, 3), padding="same", groups=8, dilation=(1, 2))
        self.valid = nn.Conv2d(8, 8, 3, padding="valid")
        self.temporal = nn.Conv1d(8, 4, 4, padding="same")

    def forward(self, x):
        features = self.depthwise(torch.relu(self.first(x)))
        return self.temporal(features.mean(2)).flatten(1).sum(1, keepdim=True) + self.valid(features).mean((2, 3))


def test_string_padding_becomes_numeric_padding_exactly_and_every_conv_is_quantized():
    torch.manual_seed(0)
    model, x = _StringPadded().eval(), torch.randn(4, 3, 12, 11)
    graph = export_model(model, (x,)).module()
    assert numeric_conv_padding(graph) == 4
    assert not any(str(node.target).endswith(".padding") for node in graph.graph.nodes)
    with torch.no_grad():
        assert torch.equal(graph(x), model(x))  # the same arithmetic: zeros before and after, as PyTorch pads

    report = {}
    int8 = quantize_int8(model, (x,), [(torch.randn(4, 3, 12, 11),) for _ in range(4)], report=report)
    assert report["numeric_conv_padding"] == 4 and quantized_layer_count(int8) == 4
    with torch.no_grad():
        reference = model(x)
        assert (int8(x) - reference).abs().max() < 0.05 * reference.abs().max()
