import math

import pytest
import torch
from torch import nn

from compression.quant.graph import as_graph_module, find_layers
from compression.quant.packed import load_packed, pack_codes, unpack_codes, write_packed
from compression.quant.weights import WeightFormat, quantize_weight


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [True, False])
def test_pack_round_trip_is_exact(bits, signed):
    qmin = -(2 ** (bits - 1)) if signed else 0
    codes = torch.randint(qmin, qmin + 2 ** bits, (7, 13), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits, qmin)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(codes.numel() * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, qmin, codes.shape), codes.to(torch.int32))


def test_int4_layout_is_low_nibble_first():
    codes = torch.tensor([-8, 7, 0, -1], dtype=torch.int8)  # stored as u = q + 8: 0, 15, 8, 7
    assert pack_codes(codes, 4, -8).tolist() == [0xF0, 0x78]


def test_int2_layout_packs_four_codes_per_byte_from_the_low_bits():
    codes = torch.tensor([0, 1, 2, 3, 3], dtype=torch.uint8)
    assert pack_codes(codes, 2, 0).tolist() == [0b11100100, 0b00000011]


def _packed_mlp(tmp_path, fmt: WeightFormat):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    example = (torch.randn(4, 512),)
    gm = as_graph_module(model, example)
    weights = {}
    for layer in find_layers(gm):
        owner, _, leaf = layer.weight_attr.rpartition(".")
        quantized = quantize_weight(getattr(gm.get_submodule(owner), leaf), fmt)
        getattr(gm.get_submodule(owner), leaf).data.copy_(quantized.dequantized)
        weights[layer.weight_attr] = quantized
    return model, gm, example, write_packed(tmp_path / "model.safetensors", gm, example, weights), weights


@pytest.mark.parametrize("bits", [2, 4])
def test_packed_size_is_close_to_theory_and_loads_to_the_same_model(tmp_path, bits):
    fmt = WeightFormat(bits=bits, granularity="per_group", group_size=128)
    model, gm, example, path, weights = _packed_mlp(tmp_path, fmt)
    weight_count = sum(w.dequantized.numel() for w in weights.values())
    scale_bytes = sum(w.qparams.scale.numel() * 2 for w in weights.values())  # bfloat16
    bias_bytes = sum(m.bias.numel() * 4 for m in model if isinstance(m, nn.Linear))
    theory = weight_count * bits / 8 + scale_bytes + bias_bytes
    size = path.stat().st_size
    assert theory <= size < 1.10 * theory
    assert size < (bits / 32 + 0.05) * weight_count * 4
    x = torch.randn(9, 512)  # another batch size than the example: the graph keeps a dynamic batch
    assert torch.allclose(load_packed(path)(x), gm(x), atol=1e-6)


def test_asymmetric_weights_round_trip(tmp_path):
    _, gm, _, path, _ = _packed_mlp(tmp_path, WeightFormat(bits=3, symmetric=False, granularity="per_group",
                                                          group_size=32))
    x = torch.randn(3, 512)
    assert torch.allclose(load_packed(path)(x), gm(x), atol=1e-6)


def test_float8_weights_round_trip(tmp_path):
    _, gm, _, path, _ = _packed_mlp(tmp_path, WeightFormat(dtype="fp8_e4m3"))
    x = torch.randn(3, 512)
    assert torch.allclose(load_packed(path)(x), gm(x), atol=1e-6)
