import copy

import pytest
import torch
from torch import nn

from compression.distill.weight_quant import (AttachedQuantizers, UniformWeightQuantizer, bucketed_format,
                                              quantizable_weights)
from compression.quant.weights import integer_qparams


def test_stochastic_rounding_is_unbiased_while_training_and_off_otherwise():
    torch.manual_seed(0)
    weight = torch.randn(4, 32, requires_grad=True)
    quantizer = UniformWeightQuantizer(bucketed_format(2, 32, weight), stochastic=True)
    nearest = UniformWeightQuantizer(bucketed_format(2, 32, weight), stochastic=False)
    with torch.no_grad():
        deterministic = quantizer(weight)
        torch.testing.assert_close(deterministic, nearest(weight))
    draws = torch.stack([quantizer(weight).detach() for _ in range(2000)])
    # Every draw is on the grid of its row, and their mean is the weight (rounding error averages out) once
    # clamped to the grid: keeping zero exact rounds the zero point, which can clip an extreme by half a step.
    params = integer_qparams(weight.detach(), quantizer.fmt)
    low = ((params.qmin - params.zero_point) * params.scale).reshape(4, 1)
    high = ((params.qmax - params.zero_point) * params.scale).reshape(4, 1)
    for row in range(4):
        assert len(torch.unique(draws[:, row])) <= 4
    assert (draws.mean(0) - torch.minimum(torch.maximum(weight.detach(), low), high)).abs().max() < 0.05
    assert (deterministic - weight.detach()).abs().max() > 0.1
    nearest(weight).sum().backward()
    # Straight-through: min-max ranges leave no weight more than half a step outside the grid, so nearest
    # rounding never clamps and every shadow weight receives the gradient unchanged.
    torch.testing.assert_close(weight.grad, torch.ones_like(weight))


@pytest.mark.parametrize("form", ["module", "exported"])
def test_skipped_weights_stay_float_and_detach_restores_the_shadow_weights(conv_net, form):
    model, program, _ = conv_net
    target = copy.deepcopy(model if form == "module" else program)
    shadow = target.conv.weight.detach().clone()
    names = quantizable_weights(target, skip=["fc.weight"])
    assert names == ["conv.weight", "pointwise.weight"]
    with pytest.raises(ValueError, match="not quantizable"):
        quantizable_weights(target, skip=["bn.weight"])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = target(x)
    attached = AttachedQuantizers(target, names, lambda w: UniformWeightQuantizer(bucketed_format(2, 64, w)))
    with torch.no_grad():
        assert not torch.allclose(target(x), expected, atol=1e-3)
        assert torch.equal(attached.shadow("conv.weight"), shadow)
        assert len(torch.unique(target.fc.weight)) > 4 * target.fc.weight.shape[0]  # skipped: still float
    attached.detach(bake=False)
    with torch.no_grad():
        torch.testing.assert_close(target(x), expected)
    assert isinstance(target.conv, nn.Module) and not hasattr(target.conv, "parametrizations")
