"""Activation fake-quantizers for QAT, applied to the inputs of conv/linear layers.

Every quantizer is first *calibrated*: with `calibrating = True` its forward records the input and returns it
unchanged, and `finish_calibration()` sets its initial range from what it saw (one batch is enough: LSQ and PACT
learn the range afterwards). All are per tensor. What calibration decides (LSQ's signed grid, the number of features)
is a plain Python attribute, not a tensor, so that the eval-mode forward exports without data-dependent branches;
calibration runs again before a resumed run restores the learned values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from compression.qat.weight_quantizers import grad_scale
from compression.quant.affine import SCALE_EPS, QParams, fake_quantize, qparams_from_min_max, qrange, round_ste

# Elements sampled when a percentile initialises PACT's clip: torch.quantile refuses very large inputs.
_QUANTILE_SAMPLE = 1 << 20


class _ActivationQuantizer(nn.Module):
    kind = ""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        self.calibrating = False
        self.features = 1  # elements of one example's input (LSQ's N)
        self._seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        if self.calibrating:
            self._seen.append(x.detach().flatten().float())
            self.features = max(1, x[0].numel()) if x.dim() > 1 else x.numel()
            return x
        return self.quantize(x)

    def finish_calibration(self) -> Tensor:
        """Initialise from the calibration inputs; returns them (flattened) for a caller that swaps quantizers."""
        if not self._seen:
            raise RuntimeError("this activation quantizer saw no data during calibration (is its layer used?)")
        observed = torch.cat(self._seen)
        self._seen = []
        self.calibrating = False
        with torch.no_grad():
            self.initialize(observed)
        return observed

    def initialize(self, observed: Tensor) -> None:
        raise NotImplementedError

    def quantize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def grid(self) -> QParams:
        """The per-tensor grid the eval-mode forward rounds on (what a deployment format's static input quantizer
        stores: `compression.hf_folder_export`)."""
        raise NotImplementedError

    def summary(self) -> dict:
        return {"quantizer": self.kind, "bits": self.bits}


class EMAMinMaxActivationQuantizer(_ActivationQuantizer):
    """STE baseline: asymmetric min-max range tracked by an exponential moving average while training, frozen in
    eval mode; rounding with the straight-through estimator (no gradient to the range)."""

    kind = "ste"

    def __init__(self, bits: int, momentum: float = 0.01):
        super().__init__(bits)
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))

    def initialize(self, observed: Tensor) -> None:
        self.min_val.fill_(float(observed.min()))
        self.max_val.fill_(float(observed.max()))

    def quantize(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.min_val.lerp_(x.detach().min().float(), self.momentum)
                self.max_val.lerp_(x.detach().max().float(), self.momentum)
        return fake_quantize(x, self.grid())

    def grid(self) -> QParams:
        return qparams_from_min_max(self.min_val, self.max_val, self.bits, symmetric=False)

    def summary(self) -> dict:
        return {**super().summary(), "min": float(self.min_val), "max": float(self.max_val)}


class LSQActivationQuantizer(_ActivationQuantizer):
    """LSQ on activations: learned step, unsigned grid 0..2^b - 1 for non-negative inputs (seen at calibration),
    signed -2^(b-1)..2^(b-1) - 1 otherwise. Step initialised to 2 * mean|x| / sqrt(Qp), gradient scaled by
    1 / sqrt(N * Qp) with N the number of features of one example."""

    kind = "lsq"

    def __init__(self, bits: int):
        super().__init__(bits)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.signed = False

    @property
    def _range(self) -> tuple[int, int]:
        return qrange(self.bits, signed=self.signed)

    def initialize(self, observed: Tensor) -> None:
        self.signed = bool(observed.min() < 0)
        self.step.fill_(max(float(2 * observed.abs().mean() / math.sqrt(self._range[1])), SCALE_EPS))

    def quantize(self, x: Tensor) -> Tensor:
        qmin, qmax = self._range
        step = grad_scale(self.step, 1.0 / math.sqrt(self.features * qmax)).abs() + SCALE_EPS
        return fake_quantize(x, QParams(step, torch.zeros_like(step), qmin, qmax))

    def grid(self) -> QParams:
        step = self.step.detach().abs() + SCALE_EPS
        return QParams(step, torch.zeros_like(step), *self._range)

    def summary(self) -> dict:
        return {**super().summary(), "step": float(self.step.detach().abs()), "signed": self.signed}


class PACTActivationQuantizer(_ActivationQuantizer):
    """PACT (Choi et al. 2018): y = clamp(x, 0, alpha) with a learned clip alpha, quantized on [0, alpha].

    The whole quantization is straight-through (y_q = y + (q(y) - y).detach()), so d y_q / d alpha is exactly the
    paper's: 1 where x >= alpha, 0 elsewhere, and autograd of `torch.where` computes it. alpha starts at the 99.9th
    percentile of the calibration inputs and gets its own L2 decay (a separate optimizer group). PACT assumes
    non-negative inputs (after ReLU): `prepare.calibrate` swaps in LSQ where a layer's input is signed.
    """

    kind = "pact"

    def __init__(self, bits: int):
        super().__init__(bits)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        self.levels = 2**bits - 1

    def initialize(self, observed: Tensor) -> None:
        sample = observed[torch.randperm(observed.numel())[:_QUANTILE_SAMPLE]] if observed.numel() > \
            _QUANTILE_SAMPLE else observed
        self.alpha.fill_(max(float(torch.quantile(sample, 0.999)), SCALE_EPS))

    def quantize(self, x: Tensor) -> Tensor:
        alpha = self.alpha.abs() + SCALE_EPS
        clipped = torch.where(x >= alpha, alpha, torch.relu(x))
        scale = (alpha / self.levels).detach()
        quantized = round_ste(clipped / scale) * scale
        return clipped + (quantized - clipped).detach()

    def grid(self) -> QParams:
        """Clipping to [0, alpha] and rounding on alpha / levels is the unsigned grid 0..levels of that step."""
        scale = (self.alpha.detach().abs() + SCALE_EPS) / self.levels
        return QParams(scale, torch.zeros_like(scale), 0, self.levels)

    def summary(self) -> dict:
        return {**super().summary(), "alpha": float(self.alpha.detach().abs())}


def make_activation_quantizer(kind: str, bits: int) -> _ActivationQuantizer:
    if kind == "ste":
        return EMAMinMaxActivationQuantizer(bits)
    if kind == "lsq":
        return LSQActivationQuantizer(bits)
    if kind == "pact":
        return PACTActivationQuantizer(bits)
    raise ValueError(f"unknown activation quantizer '{kind}'")
