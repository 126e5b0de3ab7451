"""Layer weights computed from one parameter (BiT's weight standardization) are computed once and stored before
quantization, so both PTQ paths quantize those layers (BiT kept 98 % of its weights float)."""

import torch
from torch import nn

from compression.io import export_model
from compression.ptq.computed_weights import store_computed_weights
from compression.ptq.quantize import quantize_int8


class StandardizedConv(nn.Conv2d):
    def forward(self, x):
        weight = nn.functional.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                                          momentum=0.0, eps=1e-8).reshape_as(self.weight)
        return nn.functional.conv2d(x, weight, self.bias, padding=1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = StandardizedConv(3, 16, 3)
        self.conv2 = StandardizedConv(16, 16, 3)
        self.head = nn.utils.parametrizations.weight_norm(nn.Linear(16, 4))
        self.scale = nn.Parameter(torch.ones(16))

    def forward(self, x):
        features = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3))
        # the head's weight is weight-normed; `scale` is read by a layer's weight and by the features both
        return self.head(features * self.scale) + nn.functional.linear(features, torch.diag(self.scale)).sum(1,
                                                                                                         True)


def _layer_weights(graph_module):
    layers = [node for node in graph_module.graph.nodes
              if node.op == "call_function" and node.target in (torch.ops.aten.conv2d.default,
                                                                torch.ops.aten.linear.default)]
    return [node.args[1].op for node in layers]


def test_weights_computed_from_parameters_alone_are_stored_under_their_parameter_names():
    model, x = Net().eval(), torch.randn(2, 3, 8, 8)
    graph = export_model(model, (x,)).module()
    expected = graph(x)
    assert _layer_weights(graph) == ["call_function"] * 4
    stored = store_computed_weights(graph)
    # the convolutions'; the weight-normed head's (two parameters: its folder's architecture recomputes it from
    # both) and the diagonal of `scale` (which the features read too) are left computed
    assert stored == ["conv1.weight", "conv2.weight"]
    assert _layer_weights(graph) == ["get_attr", "get_attr", "call_function", "call_function"]
    torch.testing.assert_close(graph(x), expected)


def test_int8_ptq_quantizes_standardized_convolutions():
    model, x = Net().eval(), torch.randn(4, 3, 8, 8)
    report = {}
    program = quantize_int8(model, (x,), [(x,)], report=report)
    assert report["computed_weights_stored"] == ["conv1.weight", "conv2.weight"]
    quantized = [node for node in program.graph.nodes if "dequantize_per_channel" in str(node.target)]
    assert len(quantized) >= 2  # the convolutions' int8 weights
    with torch.no_grad():
        cosine = nn.functional.cosine_similarity(program(x).flatten(), model(x).flatten(), 0)
    assert cosine > 0.99


class ReshapedWeight(nn.Module):
    """Mamba's depthwise convolution: its weight squeezed and unsqueezed back, a view of the parameter."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 3, groups=4, padding=2)

    def forward(self, x):
        return nn.functional.conv1d(x, self.conv.weight.squeeze(1).unsqueeze(1), self.conv.bias, padding=2, groups=4)


def test_a_weight_only_reshaped_is_left_as_it_is():
    # no value is computed, and the layer (called from its parent's forward) would lose its Hugging Face folder
    x = torch.randn(2, 4, 8)
    graph = export_model(ReshapedWeight().eval(), (x,)).module()
    assert store_computed_weights(graph) == []
