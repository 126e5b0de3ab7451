"""A layer whose output gets a number added (Gemma 3n's `linear(x) + 1.0`) is quantized; torchao's x86 quantizer
took the number for a second input tensor and failed its assertion."""

import torch

from compression.evaluate import tensor_sqnr_db
from compression.io import export_model
from compression.ptq import quantize_int8
from compression.ptq.quantize import quantized_layer_count
from compression.ptq.scalar_adds import scalar_adds_after_layers


class OffsetProjections(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.third = (torch.nn.Linear(16, 16) for _ in range(3))

    def forward(self, x):
        x = self.first(x) + 1.0
        x = 0.5 + self.second(torch.relu(x))
        return self.third(x) + x  # a layer plus a tensor: the quantizer's own fused pattern, left as it is


def test_a_number_added_to_a_layer_output_is_an_add_scalar_and_int8_quantizes():
    torch.manual_seed(0)
    model, x = OffsetProjections().eval(), torch.randn(32, 16)
    graph = export_model(model, (x,)).module()
    assert scalar_adds_after_layers(graph) == 2
    targets = [node.target for node in graph.graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.aten.add.Scalar) == 2 and targets.count(torch.ops.aten.add.Tensor) == 1
    torch.testing.assert_close(graph(x), model(x), rtol=0, atol=0)

    quantized = quantize_int8(model, (x[:2],), [(x,)])
    assert quantized_layer_count(quantized) == 3
    assert tensor_sqnr_db(quantized(x), model(x)) > 25
