import math

import pytest
import torch

from compression.qat.activation_quantizers import (EMAMinMaxActivationQuantizer, LSQActivationQuantizer,
                                                   PACTActivationQuantizer)
from compression.qat.weight_quantizers import (SAWB_COEFFICIENTS, LSQWeightQuantizer, MinMaxWeightQuantizer,
                                               SAWBWeightQuantizer)
from compression.quant.affine import sqnr_db


@pytest.fixture
def gaussian_weight():
    torch.manual_seed(0)
    return torch.randn(64, 32, 3, 3) * torch.linspace(0.05, 1.0, 64).view(-1, 1, 1, 1)


def test_min_max_and_sawb_fallback_give_over_40_db_at_8_bits(gaussian_weight):
    for quantizer in (MinMaxWeightQuantizer(8), SAWBWeightQuantizer(8)):
        assert sqnr_db(gaussian_weight, quantizer(gaussian_weight)) > 40
    assert SAWBWeightQuantizer(8).summary(gaussian_weight)["max_abs_fallback"]


def test_lsq_learns_its_step_to_over_40_db_at_8_bits(gaussian_weight):
    quantizer = LSQWeightQuantizer(gaussian_weight, 8)
    rows = gaussian_weight.reshape(64, -1)
    assert torch.allclose(quantizer.step, 2 * rows.abs().mean(1) / math.sqrt(127))  # the paper's init
    initial_db = sqnr_db(gaussian_weight, quantizer(gaussian_weight))
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=0.002)
    for _ in range(120):
        optimizer.zero_grad()
        (quantizer(gaussian_weight) - gaussian_weight).pow(2).sum().backward()
        optimizer.step()
    assert initial_db < 30  # the paper's init is meant for low bit widths: too coarse at 8 bits ...
    assert sqnr_db(gaussian_weight, quantizer(gaussian_weight)) > 40  # ... and the learned step fixes it


def test_lsq_gradient_scale_matches_formula(gaussian_weight):
    bits, per_channel_elements = 4, 32 * 3 * 3
    quantizer = LSQWeightQuantizer(gaussian_weight, bits)
    qmax, qmin = 7, -8
    assert quantizer.gradient_scale == pytest.approx(1 / math.sqrt(per_channel_elements * qmax))
    per_tensor = LSQWeightQuantizer(gaussian_weight, bits, per_channel=False)
    assert per_tensor.gradient_scale == pytest.approx(1 / math.sqrt(gaussian_weight.numel() * qmax))

    quantizer(gaussian_weight).sum().backward()
    # The paper's step gradient, element by element: round(v) - v inside the range, the clip code outside.
    step = quantizer.step.detach().view(-1, 1, 1, 1)
    v = gaussian_weight / step
    expected = torch.where(v <= qmin, float(qmin), torch.where(v >= qmax, float(qmax), torch.round(v) - v))
    expected = expected.sum(dim=(1, 2, 3)) * quantizer.gradient_scale
    assert torch.allclose(quantizer.step.grad, expected, rtol=1e-4, atol=1e-6)


def test_lsq_input_gradient_is_masked_outside_the_clip_range():
    weight = torch.tensor([[-10.0, -0.3, 0.2, 0.5, 10.0]], requires_grad=True)
    quantizer = LSQWeightQuantizer(weight.detach(), 4)
    with torch.no_grad():
        quantizer.step.fill_(0.1)  # codes -8..7: the range is [-0.8, 0.7]
    quantizer(weight).sum().backward()
    assert weight.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]


def test_lsq_step_stays_positive_under_a_large_negative_gradient(gaussian_weight):
    quantizer = LSQWeightQuantizer(gaussian_weight, 4)
    optimizer = torch.optim.SGD(quantizer.parameters(), lr=1e6)
    quantizer(gaussian_weight).pow(2).sum().backward()  # shrinking the step shrinks this loss
    optimizer.step()
    assert (quantizer.step < 0).any()  # the raw parameter was pushed through zero ...
    assert (quantizer.scale(gaussian_weight) > 0).all()  # ... the step used stays positive
    assert torch.isfinite(quantizer(gaussian_weight)).all()


def test_pact_alpha_gradient_counts_clipped_elements():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 16, 8, 8) * 3)
    quantizer = PACTActivationQuantizer(4)
    quantizer.calibrating = True
    quantizer(x)
    quantizer.finish_calibration()
    with torch.no_grad():
        quantizer.alpha.fill_(2.5)
    out = quantizer(x)
    out.sum().backward()
    assert quantizer.alpha.grad.item() == (x >= 2.5).sum().item()
    assert float(out.detach().max()) == pytest.approx(2.5) and float(out.detach().min()) == 0.0
    assert len(out.unique()) <= 2**4


def test_pact_initial_clip_is_a_high_percentile():
    x = torch.relu(torch.randn(100_000))
    quantizer = PACTActivationQuantizer(4)
    quantizer.calibrating = True
    quantizer(x)
    quantizer.finish_calibration()
    assert float(quantizer.alpha.detach()) == pytest.approx(float(torch.quantile(x, 0.999)), rel=1e-3)


def test_lsq_activation_picks_signed_grid_for_signed_inputs():
    for data, signed in ((torch.relu(torch.randn(8, 10)), False), (torch.randn(8, 10), True)):
        quantizer = LSQActivationQuantizer(4)
        quantizer.calibrating = True
        quantizer(data)
        quantizer.finish_calibration()
        assert quantizer.signed == signed and quantizer.features == 10
        assert sqnr_db(data, quantizer(data)) > 12


def test_ema_activation_range_tracks_batches_only_in_training():
    quantizer = EMAMinMaxActivationQuantizer(8, momentum=0.5)
    quantizer.calibrating = True
    quantizer(torch.tensor([0.0, 1.0]))
    quantizer.finish_calibration()
    quantizer.train()
    quantizer(torch.tensor([0.0, 3.0]))
    assert float(quantizer.max_val) == 2.0
    quantizer.eval()
    quantizer(torch.tensor([0.0, 100.0]))
    assert float(quantizer.max_val) == 2.0


def _mse_optimal_clip(w, quantize, bits):
    clips = torch.linspace(1.0, 3.5, 126, dtype=torch.float64)  # steps of 0.02
    errors = torch.stack([(quantize(w, clip, bits) - w).pow(2).mean() for clip in clips])
    return float(clips[errors.argmin()])


def _narrow_grid(w, clip, bits):  # the grid the SAWB quantizer uses: -Qp..Qp steps of clip / Qp
    qmax = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / (clip / qmax)), -qmax, qmax) * (clip / qmax)


def _four_level_grid(w, clip, bits):  # 2-bit SAWB's grid in the paper: +-clip/3, +-clip (no zero)
    step = 2 * clip / 3
    return (torch.clamp(torch.floor(w / step), -2, 1) + 0.5) * step


def test_sawb_clip_is_near_the_mse_optimal_clip_for_a_gaussian():
    torch.manual_seed(0)
    w = torch.randn(100_000, dtype=torch.float64)
    for bits in (3, 4, 5):
        sawb = float(SAWBWeightQuantizer(bits, per_channel=False).clip(w.view(1, -1)))
        assert sawb == pytest.approx(_mse_optimal_clip(w, _narrow_grid, bits), rel=0.04)
    sawb_2bit = float(SAWBWeightQuantizer(2, per_channel=False).clip(w.view(1, -1)))
    assert sawb_2bit == pytest.approx(_mse_optimal_clip(w, _four_level_grid, 2), rel=0.04)
    # The other reading of the formula (c1 * E|w| + c2 * sqrt(E[w^2])) gives no usable clip.
    for bits in (3, 4, 5):
        c1, c2 = SAWB_COEFFICIENTS[bits]
        assert c1 * float(w.abs().mean()) + c2 * float(w.pow(2).mean().sqrt()) < 0
