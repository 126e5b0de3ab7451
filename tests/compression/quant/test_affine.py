import math

import pytest
import torch

from compression.quant.affine import (dequantize, fake_quantize, from_groups, min_max, qparams_for,
                                      qparams_from_min_max, qrange, quantize, sqnr_db, to_groups)


def test_qrange():
    assert qrange(8, signed=True) == (-128, 127)
    assert qrange(8, signed=True, narrow=True) == (-127, 127)
    assert qrange(8, signed=False) == (0, 255)
    assert qrange(4, signed=True) == (-8, 7)
    assert qrange(2, signed=False) == (0, 3)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", [{}, {"axis": 0}, {"axis": 1}, {"group_size": 16}, {"group_size": 7}])
def test_round_trip_error_is_at_most_half_a_step(symmetric, granularity):
    torch.manual_seed(0)
    x = torch.randn(6, 5, 3, 3) * torch.linspace(0.1, 3, 6).view(6, 1, 1, 1)
    params = qparams_for(x, 8, symmetric=symmetric, **granularity)
    codes = quantize(x, params)
    assert codes.dtype == (torch.int8 if symmetric else torch.uint8)
    assert int(codes.min()) >= params.qmin and int(codes.max()) <= params.qmax
    restored = dequantize(codes, params)
    assert restored.shape == x.shape
    assert torch.all((restored - x).abs() <= _broadcast_scale(x, params) / 2 + 1e-6)
    assert torch.equal(fake_quantize(x, params), restored)


def _broadcast_scale(x, params):
    """The step size that applies to each element of x."""
    return dequantize(torch.ones_like(x, dtype=torch.int32), params) - dequantize(
        torch.zeros_like(x, dtype=torch.int32), params)


def test_per_channel_beats_per_tensor_when_channel_ranges_differ():
    torch.manual_seed(0)
    w = torch.randn(16, 64) * torch.logspace(-2, 0, 16).unsqueeze(1)
    per_tensor = sqnr_db(w, fake_quantize(w, qparams_for(w, 4, symmetric=True)))
    per_channel = sqnr_db(w, fake_quantize(w, qparams_for(w, 4, symmetric=True, axis=0)))
    per_group = sqnr_db(w, fake_quantize(w, qparams_for(w, 4, symmetric=True, group_size=8)))
    assert per_channel > per_tensor + 4  # the large channels dominate SQNR, so the gain is modest
    assert per_group > per_channel


def test_gaussian_sqnr_at_8_bits():
    torch.manual_seed(0)
    w = torch.randn(128, 256)
    assert sqnr_db(w, fake_quantize(w, qparams_for(w, 8, symmetric=True, axis=0))) > 38


def test_asymmetric_range_represents_zero_exactly():
    x = torch.tensor([0.3, 0.0, 1.7, 2.9])  # min > 0: the range is extended down to zero
    params = qparams_for(x, 8, symmetric=False)
    assert float(params.zero_point) == 0
    assert float(fake_quantize(x, params)[1]) == 0.0
    negative = torch.tensor([-3.0, -1.0, 0.0, 1.0])
    params = qparams_for(negative, 8, symmetric=False)
    assert float(fake_quantize(negative, params)[2]) == 0.0
    assert 0 < float(params.zero_point) < 255


def test_symmetric_grid_holds_both_extremes():
    x = torch.tensor([-2.0, 0.5, 2.0])
    params = qparams_for(x, 4, symmetric=True)
    assert torch.allclose(fake_quantize(x, params)[[0, 2]], torch.tensor([-2.0, 2.0]))


def test_groups_round_trip_with_padding():
    x = torch.arange(30.0).reshape(3, 10)
    grouped = to_groups(x, 4)
    assert grouped.shape == (3, 3, 4)
    assert torch.equal(from_groups(grouped, x.shape), x)
    lo, hi = min_max(x, group_size=4)
    assert hi[0].tolist() == [3.0, 7.0, 9.0]


def test_all_zero_channel_does_not_divide_by_zero():
    w = torch.zeros(2, 4)
    w[1] = torch.tensor([1.0, -1.0, 0.5, 0.25])
    params = qparams_for(w, 4, symmetric=True, axis=0)
    out = fake_quantize(w, params)
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros(4))


def test_fake_quantize_gradient_is_identity_inside_range_and_zero_outside():
    x = torch.tensor([-5.0, -0.4, 0.0, 0.7, 5.0], requires_grad=True)
    params = qparams_from_min_max(torch.tensor(-1.0), torch.tensor(1.0), 4, symmetric=True)
    fake_quantize(x, params).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_stochastic_rounding_is_unbiased():
    x = torch.full((20000,), 0.3)
    params = qparams_from_min_max(torch.tensor(-1.0), torch.tensor(1.0), 2, symmetric=True)  # grid step 1.0
    generator = torch.Generator().manual_seed(0)
    rounded = fake_quantize(x, params, stochastic=True, generator=generator)
    assert set(rounded.unique().tolist()) == {0.0, 1.0}
    assert abs(float(rounded.mean()) - 0.3) < 0.02
    assert float(fake_quantize(x, params).mean()) == 0.0


def test_sqnr_db():
    x = torch.ones(100)
    assert math.isclose(sqnr_db(x, x * 1.1), 20.0, abs_tol=1e-5)
    assert sqnr_db(x, x) == math.inf
