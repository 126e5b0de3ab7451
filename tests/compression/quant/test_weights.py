import torch

from compression.quant.affine import sqnr_db
from compression.quant.weights import WeightFormat, quantize_weight


def weight_with_outlier_channels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 256, generator=generator) * 0.05
    weight[:4] *= 40  # a few channels with a far larger range, as in real conv/attention layers
    weight[10, 7] = 3.0  # and one outlier weight inside an ordinary channel
    return weight


def _sqnr(weight: torch.Tensor, **fmt) -> float:
    return sqnr_db(weight, quantize_weight(weight, WeightFormat(**fmt)).dequantized)


def test_finer_granularity_beats_coarser_on_outlier_channels():
    weight = weight_with_outlier_channels()
    per_tensor = _sqnr(weight, bits=4, granularity="per_tensor")
    per_channel = _sqnr(weight, bits=4, granularity="per_channel")
    per_group = _sqnr(weight, bits=4, granularity="per_group", group_size=32)
    assert per_group > per_channel + 1.0 > per_tensor + 2.0
    assert per_group > 18.0


def test_mse_clip_beats_minmax_at_low_bits():
    weight = torch.randn(32, 512, generator=torch.Generator().manual_seed(1)) * 0.05
    minmax = _sqnr(weight, bits=3, granularity="per_channel")
    mse = _sqnr(weight, bits=3, granularity="per_channel", range="mse")
    assert mse > minmax + 1.0


def test_integer_codes_fit_their_width_and_dequantize_to_the_simulated_weight():
    weight = weight_with_outlier_channels()
    for bits in (2, 3, 4, 8):
        for symmetric in (True, False):
            quantized = quantize_weight(weight, WeightFormat(bits=bits, symmetric=symmetric))
            codes = quantized.codes.to(torch.int32)
            assert codes.min() >= quantized.qparams.qmin and codes.max() <= quantized.qparams.qmax
            assert codes.max() - codes.min() < 2 ** bits


def test_float_formats_keep_their_precision():
    weight = weight_with_outlier_channels()
    assert _sqnr(weight, dtype="fp16") > 60
    assert _sqnr(weight, dtype="bf16") > 45
    e4m3 = _sqnr(weight, dtype="fp8_e4m3")
    e5m2 = _sqnr(weight, dtype="fp8_e5m2")
    assert e4m3 > 28 and e5m2 > 20 and e4m3 > e5m2  # one more mantissa bit is worth ~6 dB
    assert quantize_weight(weight, WeightFormat(dtype="fp8_e4m3")).cast.dtype == torch.float8_e4m3fn
