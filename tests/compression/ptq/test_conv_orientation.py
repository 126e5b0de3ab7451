import torch
import torch.nn.functional as F

from compression.evaluate import tensor_sqnr_db
from compression.io import export_model
from compression.ptq import quantize_int8
from compression.ptq.conv_orientation import float_program_on_its_side, tall_convs_on_their_side
from compression.ptq.quantize import quantized_layer_count
from tests.compression.real_shapes import TallAudioNet


def test_tall_convs_are_turned_on_their_side_exactly():
    torch.manual_seed(0)
    model, audio = TallAudioNet().eval(), torch.randn(4, 128)
    graph = export_model(model, (audio,)).module()
    assert tall_convs_on_their_side(graph) == 3  # first, dilated, grouped; not the three-wide one
    weights = [n.target for n in graph.graph.nodes if n.op == "get_attr" and n.target.endswith("_on_its_side")]
    assert len(weights) == 3 and all(graph.get_parameter(w).shape[2] == 1 for w in weights)
    with torch.no_grad():
        torch.testing.assert_close(graph(audio), model(audio), rtol=1e-5, atol=1e-6)


def test_int8_of_a_tall_conv_net_quantizes_every_conv_and_reports_the_rewrite():
    torch.manual_seed(0)
    model, audio = TallAudioNet().eval(), torch.randn(64, 128)
    report = {}
    quantized = quantize_int8(model, (audio[:4],), [(audio[i:i + 16],) for i in range(0, 64, 16)], report=report)
    assert report["tall_convs_on_their_side"] == 3
    assert quantized_layer_count(quantized) == 5  # four convs and the linear
    with torch.no_grad():
        assert tensor_sqnr_db(model(audio), quantized(audio)) > 20


def test_a_conv_padded_across_the_one_wide_axis_is_left_alone():
    conv = torch.nn.Conv2d(2, 2, (3, 1), padding=(0, 1)).eval()
    graph = export_model(conv, (torch.randn(2, 2, 9, 1),)).module()
    assert tall_convs_on_their_side(graph) == 0


def test_a_float_program_is_turned_with_its_weights_under_their_own_names():
    torch.manual_seed(0)
    model, audio = TallAudioNet().eval(), torch.randn(4, 128)
    program = export_model(model, (audio,))
    before = {name: tuple(value.shape) for name, value in program.state_dict.items()}
    turned, count = float_program_on_its_side(program, (audio,))
    after = {name: tuple(value.shape) for name, value in turned.state_dict.items()}
    assert count == 3 and after.keys() == before.keys()  # no copy beside the tall weight
    assert [name for name in after if after[name] != before[name]] == ["first.weight", "dilated.weight",
                                                                       "grouped.weight"]
    assert after["first.weight"] == (8, 1, 1, 32)
    other_batch = torch.randn(7, 128)  # the batch dimension stays dynamic
    with torch.no_grad():
        for batch in (audio, other_batch):
            torch.testing.assert_close(turned.module()(batch), model(batch), rtol=1e-5, atol=1e-6)


def test_a_weight_two_convs_read_stays_tall_in_a_float_program():
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, (3, 1), padding=(1, 0))

        def forward(self, x):
            return self.conv(self.conv(x))

    model, x = Shared().eval(), torch.randn(2, 2, 9, 1)
    turned, count = float_program_on_its_side(export_model(model, (x,)), (x,))
    assert count == 0 and turned.state_dict["conv.weight"].shape == (2, 2, 3, 1)


def test_a_buffer_weight_is_turned_in_place_and_a_constant_one_left_alone_exactly():
    class FromBuffers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("filters", torch.randn(4, 2, 5, 1))
            self.fixed = torch.randn(4, 4, 3, 1)  # exported as a program constant

        def forward(self, x):
            return F.conv2d(F.conv2d(x, self.filters), self.fixed)

    model, x = FromBuffers().eval(), torch.randn(3, 2, 20, 1)
    turned, count = float_program_on_its_side(export_model(model, (x,)), (x,))
    assert count == 1 and turned.state_dict["filters"].shape == (4, 2, 1, 5)
    torch.testing.assert_close(turned.module()(x), model(x), rtol=1e-5, atol=1e-6)
