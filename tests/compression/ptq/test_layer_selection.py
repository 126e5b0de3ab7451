"""`include` / `exclude` on the default int8 path: the layers left out stay float in the pt2e program (no quantize/
dequantize pair around them), the others are int8, and the spec keeps the default path."""

import pytest
import torch

from compression import zoo
from compression.evaluate import tensor_sqnr_db
from compression.ptq.quantize import quantize_int8, quantized_layer_count
from compression.quant.graph import find_layers, get_tensor
from compression.specs.ptq import PTQSpec

CNN_LAYERS = ["0", "4", "9", "11"]  # conv, conv, linear, linear of zoo's small_cnn
TRANSFORMER_LAYERS = ["blocks.0.qkv", "blocks.0.proj", "blocks.0.ff.0", "blocks.0.ff.2", "blocks.1.qkv",
                      "blocks.1.proj", "blocks.1.ff.0", "blocks.1.ff.2", "head"]


def _is(node, name: str) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and name in str(node.target)


def _cnn():
    torch.manual_seed(0)
    return zoo.build("small_cnn", image_size=28, width=8), torch.randn(48, 1, 28, 28)


def _transformer():
    torch.manual_seed(0)
    model = zoo.build("tiny_transformer", vocab_size=50, max_length=12, dim=16, heads=2, layers=2)
    return model, torch.randint(0, 50, (48, 12))


def _quantize(model, x, **patterns):
    report = {}
    graph = quantize_int8(model, (x[:4],), [(x[i:i + 16],) for i in range(0, 48, 16)], report=report, **patterns)
    return graph, report


def _float_layers(graph: torch.fx.GraphModule) -> list[str]:
    """Layers the int8 program runs in float, checked to be float through and through: a float32 weight read with
    get_attr (int8 layers read `dequantize_per_channel(int8 codes)`), an input that is no dequantized value and an
    output that is not quantized again."""
    names = []
    for layer in find_layers(graph):
        node = layer.node
        assert get_tensor(graph, layer.weight_attr).dtype == torch.float32, layer.name
        assert not _is(node.args[0], "dequantize"), f"{layer.name} reads a dequantized input"
        assert not any(_is(user, "quantize") for user in node.users), f"{layer.name}'s output is quantized"
        names.append(layer.name)
    for node in graph.graph.nodes:
        if _is(node, "dequantize_per_channel"):
            assert get_tensor(graph, node.args[0].target).dtype == torch.int8
    return names


@pytest.mark.parametrize("make, exclude, left_float", [
    (_cnn, ["4", "11"], ["4", "11"]),  # conv 4 reads maxpool(relu(int8 conv 0)): that maxpool must not stay int8
    (_transformer, ["*.ff.2", "head"], ["blocks.0.ff.2", "blocks.1.ff.2", "head"]),
])
def test_excluded_layers_stay_float_and_the_output_gets_closer_to_fp32(make, exclude, left_float):
    model, x = make()
    everything, _ = _quantize(model, x)
    graph, report = _quantize(model, x, exclude=exclude)
    assert _float_layers(everything) == []
    assert _float_layers(graph) == left_float == report["float_layers"]
    assert quantized_layer_count(graph) == quantized_layer_count(everything) - len(left_float)
    quantizers = [sum(1 for node in g.graph.nodes if _is(node, "quantize_per_tensor")) for g in (everything, graph)]
    assert quantizers[1] < quantizers[0]  # the activations only float layers read are no longer rounded
    with torch.no_grad():
        reference = model(x)
        assert tensor_sqnr_db(reference, graph(x)) > tensor_sqnr_db(reference, everything(x)) + 0.5


def test_include_quantizes_only_the_named_layers():
    model, x = _transformer()
    graph, report = _quantize(model, x, include=["blocks.*.qkv"])
    assert quantized_layer_count(graph) == 2
    assert _float_layers(graph) == [name for name in TRANSFORMER_LAYERS if not name.endswith("qkv")]
    assert report["float_layers"] == _float_layers(graph)


@pytest.mark.parametrize("patterns, message", [
    ({"exclude": ["blocks.2.*"]}, "exclude patterns ['blocks.2.*'] match no layer; layers are ['blocks.0.qkv'"),
    ({"include": ["ff.*"]}, "include patterns ['ff.*'] match no layer"),
    ({"exclude": ["*"]}, "no conv/linear layer left to quantize"),
])
def test_patterns_that_select_nothing_are_refused(patterns, message):
    model, x = _transformer()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("*", r"\*").replace(".", r"\.")):
        _quantize(model, x, **patterns)


def test_layer_selection_keeps_the_default_path_but_not_with_onnx_runtime():
    assert PTQSpec(exclude=["*[0-9].output.dense"]).is_x86_int8_default
    assert PTQSpec(include=["encoder.*"], exclude=["*[0-9].output.dense"], extra_formats=["aoti"],
                   smoothquant={"alpha": 0.5}).is_x86_int8_default
    assert not PTQSpec(exclude=["fc"], layer_bits={"conv*": 4}).is_x86_int8_default
    with pytest.raises(ValueError, match="'onnx_int8' quantizes every layer"):
        PTQSpec(exclude=["fc"], extra_formats=["onnx_int8"])


def test_excluded_layers_keep_their_names_through_smoothquant():
    model, x = _transformer()  # SmoothQuant inserts nodes and re-exports: the patterns still name the same layers
    graph, report = _quantize(model, x, exclude=["blocks.1.*"], smoothquant_alpha=0.5)
    assert report["smoothquant"]["groups"] > 0
    assert _float_layers(graph) == [name for name in TRANSFORMER_LAYERS if name.startswith("blocks.1.")]
    with torch.no_grad():
        assert tensor_sqnr_db(model(x), graph(x)) > 30
