import torch

from compression.quant.affine import fake_quantize, qparams_from_min_max
from compression.quant.observers import make_observer


def _observe(kind: str, data: torch.Tensor, bits: int = 8, symmetric: bool = False, **kwargs):
    observer = make_observer(kind, bits, symmetric, **kwargs)
    for chunk in data.split(len(data) // 8):
        observer.observe(chunk)
    return observer.range()


def _mse(data: torch.Tensor, lo: float, hi: float, bits: int) -> float:
    params = qparams_from_min_max(torch.tensor(lo), torch.tensor(hi), bits, symmetric=False)
    return float((fake_quantize(data, params) - data).pow(2).mean())


def heavy_tailed(n: int = 400_000) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    # Gaussian over sqrt(uniform): Student-t-like tails (a few values in the hundreds).
    return torch.randn(n, generator=generator) / torch.rand(n, generator=generator).clamp(min=1e-3).sqrt()


def test_minmax_is_the_exact_extremes():
    data = torch.randn(10_000)
    assert _observe("minmax", data) == (float(data.min()), float(data.max()))


def test_moving_average_sits_inside_the_extremes():
    data = torch.randn(80_000, generator=torch.Generator().manual_seed(0))
    data[5] = 50.0  # one outlier batch
    lo, hi = _observe("moving_average_minmax", data, averaging_constant=0.1)
    assert 3.0 < hi < 50.0 and lo < -3.0


def test_percentile_of_a_gaussian_matches_its_quantile():
    data = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    lo, hi = _observe("percentile", data, percentile=99.0)
    # The positive values of N(0, 1) are half-normal: their 99th percentile is the normal's 99.5th, 2.576.
    assert abs(hi - 2.576) < 0.05 and abs(lo + 2.576) < 0.05


def test_mse_clips_heavy_tails_and_beats_minmax():
    data = heavy_tailed(100_000)
    lo, hi = _observe("mse", data, bits=4)
    assert hi < 0.5 * float(data.max()) and lo > 0.5 * float(data.min())
    assert _mse(data, lo, hi, 4) < 0.5 * _mse(data, float(data.min()), float(data.max()), 4)


def test_kl_ignores_rare_outliers_of_relu_activations():
    data = torch.relu(torch.randn(400_000, generator=torch.Generator().manual_seed(0)))
    data[::10_000] = 50.0  # 0.01% outliers
    lo, hi = _observe("kl", data)
    assert lo == 0.0
    assert 3.0 < hi < 10.0
    bulk = data[data < 10]  # what the threshold buys: a much finer grid for 99.99% of the values
    assert _mse(bulk, lo, hi, 8) < _mse(bulk, 0.0, 50.0, 8) / 10
