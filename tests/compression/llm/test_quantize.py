import pytest
import torch

from compression.llm.export import compressed_tensors, decompressed_weight
from compression.llm.quantize import WeightFormat, dequantize, qparams, quantize, rtn, weight_sqnr_db


def _weight(rows=64, columns=256, seed=0):
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [None, 32, 128])
def test_rtn_codes_stay_in_range_and_error_is_at_most_half_a_step(bits, symmetric, group_size):
    fmt = WeightFormat(bits, group_size, symmetric)
    weight = _weight()
    quantized = rtn(weight, fmt, torch.float32)
    assert quantized.codes.dtype == torch.int8
    assert int(quantized.codes.min()) >= fmt.qmin and int(quantized.codes.max()) <= fmt.qmax
    assert quantized.scale.shape == (64, 256 // (group_size or 256))
    step = quantized.scale.repeat_interleave(256 // quantized.scale.shape[1], dim=1)
    error = (weight - quantized.dequantize()).abs()
    # min-max grids cover every weight: rounding (or the clamp of max|w| at 7.5 steps to 7) moves it by <= half a step
    assert bool((error <= step * 0.5 * (1 + 1e-4)).all())


@pytest.mark.parametrize("group_size, columns, fitted", [
    (128, 256, 128), (128, 576, 64), (128, 96, 32), (64, 96, 32), (128, 48, None), (32, 48, None), (None, 48, None),
    (32, 32, 32)])
def test_a_layer_takes_the_largest_group_size_up_to_the_asked_one_that_divides_its_width(group_size, columns,
                                                                                          fitted):
    fmt = WeightFormat(4, group_size, True)
    assert fmt.for_columns(columns) == WeightFormat(4, fitted, True)
    quantized = rtn(_weight(columns=columns), fmt.for_columns(columns), torch.float32)
    assert quantized.scale.shape == (64, columns // (fitted or columns))


def test_more_bits_and_smaller_groups_mean_less_error():
    weight = _weight()
    sqnr = {(bits, group): weight_sqnr_db(weight, rtn(weight, WeightFormat(bits, group), torch.float32).dequantize())
            for bits in (3, 4, 8) for group in (None, 32)}
    assert sqnr[(3, None)] < sqnr[(4, None)] < sqnr[(8, None)]
    assert sqnr[(4, None)] < sqnr[(4, 32)]
    assert sqnr[(8, None)] > 40 and sqnr[(4, 32)] > 18


def test_asymmetric_grid_represents_zero_exactly_and_fits_one_sided_weights():
    weight = _weight().abs()  # all positive: a symmetric grid wastes its negative half
    asymmetric = rtn(weight, WeightFormat(4, 32, False), torch.float32)
    symmetric = rtn(weight, WeightFormat(4, 32, True), torch.float32)
    assert weight_sqnr_db(weight, asymmetric.dequantize()) > weight_sqnr_db(weight, symmetric.dequantize()) + 4
    zeros = torch.zeros(4, 32)
    assert torch.equal(rtn(zeros, WeightFormat(4, 32, False), torch.float32).dequantize(), zeros)


def test_fp8_is_e4m3_per_channel_with_max_mapped_to_448():
    weight = _weight() * torch.linspace(0.01, 10, 64).unsqueeze(1)
    quantized = rtn(weight, WeightFormat(8, None, True, "fp8"), torch.float32)
    assert quantized.codes.dtype == torch.float8_e4m3fn and quantized.zero_point is None
    assert torch.allclose(quantized.codes.float().abs().amax(dim=1), torch.full((64,), 448.0))
    assert weight_sqnr_db(weight, quantized.dequantize()) > 28


def test_scale_is_rounded_to_the_storage_dtype_before_codes_are_computed():
    weight = _weight()
    fmt = WeightFormat(4, 32, True)
    scale, zero = qparams(weight, fmt, torch.bfloat16)
    assert torch.equal(scale, scale.to(torch.bfloat16).float())
    quantized = rtn(weight, fmt, torch.bfloat16)
    assert quantized.scale.dtype == torch.bfloat16
    assert torch.equal(quantized.codes, quantize(weight, scale, zero, fmt))


@pytest.mark.parametrize("fmt", [WeightFormat(4, 32, True), WeightFormat(4, 64, False), WeightFormat(3, None, True),
                                 WeightFormat(8, 128, False), WeightFormat(8, None, True, "fp8")])
def test_written_tensors_decompress_to_the_same_weight(fmt):
    weight = _weight(rows=72)  # rows not a multiple of 32: zero points pack across a partial word
    quantized = rtn(weight, fmt, torch.float16)
    tensors = compressed_tensors("layer", quantized)
    if fmt.kind == "int":
        assert tensors["layer.weight_packed"].dtype == torch.int32
        assert tensors["layer.weight_packed"].shape == (72, -(-256 * fmt.bits // 32))
        assert ("layer.weight_zero_point" in tensors) == (not fmt.symmetric)
    restored = decompressed_weight(tensors, "layer", fmt)
    assert torch.equal(restored, dequantize(quantized.codes, quantized.scale, quantized.zero_point, fmt))


def test_the_packing_is_compressed_tensors_own():
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    codes = torch.tensor([[-8, 7, 0, -1, 1, 2, 3, 4]], dtype=torch.int8)
    quantized = rtn(torch.zeros(1, 8), WeightFormat(4, None, True), torch.float32)
    quantized.codes = codes
    packed = compressed_tensors("x", quantized)["x.weight_packed"]
    # offset by 8 to unsigned, code j at bits 4j..4j+3 of the word
    expected = sum(((int(c) + 8) << (4 * j)) for j, c in enumerate(codes[0]))
    assert packed.shape == (1, 1) and int(packed[0, 0]) & 0xFFFFFFFF == expected
    assert torch.equal(unpack_from_int32(packed, 4, torch.Size((1, 8))), codes)
