import pytest
import torch

from compression.quant.graph import as_graph_module, find_layers, fold_batchnorm, layer_bits, select_layers
from tests.compression.quant.conftest import tiny_cnn


@pytest.fixture
def folded():
    model = tiny_cnn()
    x = torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    gm = as_graph_module(model, (x[:4],))
    fold_batchnorm(gm)
    return model, gm, x


def test_batchnorm_folds_into_the_conv_without_changing_outputs(folded):
    model, gm, x = folded
    assert not any("batch_norm" in str(node.target) for node in gm.graph.nodes)
    with torch.no_grad():
        assert torch.allclose(gm(x), model(x), atol=1e-5)


def test_layers_are_named_after_their_weight_owner_in_execution_order(folded):
    _, gm, _ = folded
    layers = find_layers(gm)
    assert [layer.name for layer in layers] == ["conv1", "conv2", "fc"]
    assert [layer.kind for layer in layers] == ["conv", "conv", "linear"]
    assert layers[0].bias_attr is not None  # the folded BatchNorm gave the bias-free conv a bias


def test_include_exclude_and_per_layer_bits(folded):
    layers = find_layers(folded[1])
    assert [l.name for l in select_layers(layers, ["conv*"], [])] == ["conv1", "conv2"]
    assert [l.name for l in select_layers(layers, [], ["conv1", "f?"])] == ["conv2"]
    with pytest.raises(ValueError, match="match no layer"):
        select_layers(layers, ["layer9.*"], [])
    overrides = {"conv*": 4, "conv2": 6}
    assert [layer_bits(name, 8, overrides) for name in ("conv1", "conv2", "fc")] == [4, 6, 8]
