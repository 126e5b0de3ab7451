"""Linear and conv calls that no plain nn.Linear / nn.Conv2d made (nn.MultiheadAttention's F.linear projections,
subclasses of the layers in a loaded program) are quantized by int8 PTQ like the others
(`compression/ptq/functional_layers.py`); a weight that is a buffer (a fixed filterbank) is no layer."""

import torch
import torch.nn.functional as F

from compression.io import export_model, load_model, save_program
from compression.ptq.quantize import quantize_int8, quantized_layer_count

LINEAR = torch.ops.aten.linear.default


class EncoderClassifier(torch.nn.Module):
    """PyTorch's own transformer encoder: its attention projects with F.linear on the attention module's weights."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class OwnLinear(torch.nn.Linear):
    """A subclass, recorded by name in a saved program."""


class SubclassesAndAFilterbank(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = type("SameConv", (torch.nn.Conv2d,), {})(1, 4, 3, padding=1)
        self.project = OwnLinear(4 * 6 * 6, 16)
        self.register_buffer("filterbank", torch.rand(8, 16))  # fixed weights: not a layer
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x):
        hidden = torch.relu(self.project(torch.relu(self.conv(x)).flatten(1)))
        return self.out(F.linear(hidden, self.filterbank))


def calibrated(model, example):
    calibration = [(torch.randn_like(example),) for _ in range(4)]
    report = {}
    return quantize_int8(model, (example,), calibration, report=report), report


def test_the_attention_projections_of_a_torch_transformer_are_quantized():
    model, example = EncoderClassifier().eval(), torch.randn(4, 10, 32)
    int8, report = calibrated(model, example)
    # per layer: the attention's input and output projections, the two feed-forward linears; and the head
    assert quantized_layer_count(int8) == 2 * 4 + 1
    assert report["functional_layers"] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
    with torch.no_grad():
        x = torch.randn(16, 10, 32)
        assert F.cosine_similarity(int8(x).flatten(), model(x).flatten(), dim=0) > 0.99


def test_layer_subclasses_of_a_loaded_program_are_quantized_and_a_buffer_weight_is_not(tmp_path):
    example = torch.randn(2, 1, 6, 6)
    path = save_program(export_model(SubclassesAndAFilterbank().eval(), (example,)), tmp_path / "model.pt2")
    loaded = load_model(path)  # module types are strings in a loaded program: the subclasses' own names
    int8, report = calibrated(loaded, example)
    assert quantized_layer_count(int8) == 3  # conv, project, out
    assert len(report["functional_layers"]) == 2
    float_linears = [node for node in int8.graph.find_nodes(op="call_function", target=LINEAR)
                     if node.args[1].op == "get_attr"]
    assert len(float_linears) == 1 and "filterbank" in float_linears[0].args[1].target
