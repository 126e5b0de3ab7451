"""PESTO (Riou et al., ISMIR 2023: self-supervised pitch estimation), the `mir-1k` checkpoint shipped in the
`pesto-pitch` wheel (PyPI, LGPL-3.0): a small 1-D CNN over one frame of a constant-Q transform (layer norm over
264 log-frequency bins, two 15-tap convolutions with a residual, four 1x1 convolutions, LeakyReLU, a Toeplitz
"linear" that is a 1175-tap convolution, softmax over 384 pitch bins of a third of a semitone), 28.5k parameters.

pesto's package `__init__` imports torchaudio (which pins its own torch), so it is installed with
`pip install --no-deps pesto-pitch==2.0.1` and its `__init__` is never run: the package is registered without it
and only `pesto.model` (the encoder) and `pesto.data` (its CQT front end, nnAudio's code) are imported. The
checkpoint is read with `torch.load(weights_only=True)`.

The task reuses CREPE's: harmonic tones (up to 30 harmonics) with f0 log-uniform in 80-800 Hz (PESTO was trained
on singing voice) in white noise, 16 kHz; the model input is PESTO's own CQT frame of the tone's middle (computed
by the benchmark, as PESTO's front end does, with its dB -> natural-log scaling and crop); pitch is PESTO's "alwa"
reduction of the activations shifted by the checkpoint's calibrated `shift`; the metric is raw pitch accuracy
within 50 cents.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch

from bench.real_models.tones import noisy_harmonic_tones

SAMPLE_RATE = 16_000
TONE_SAMPLES = 32_768  # 2 s: the CQT's lowest bin (27.5 Hz) has a 2 s kernel, centred on the middle frame
# Only the middle frame is used, so the hop is half the tone: 3 frames are computed instead of 200.
HOP_MS = 1000 * TONE_SAMPLES / 2 / SAMPLE_RATE
HARMONICS = 30
CHECKPOINT = "mir-1k"


def _package_folder() -> Path:
    if "pesto" in sys.modules:
        return Path(sys.modules["pesto"].__path__[0])
    spec = importlib.util.find_spec("pesto")  # finds the installed package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pesto-pitch is not installed: pip install --no-deps pesto-pitch==2.0.1")
    return Path(next(iter(spec.submodule_search_locations)))


def _pesto_modules():
    """pesto.model and pesto.data without running pesto/__init__.py (it imports torchaudio)."""
    if "pesto" not in sys.modules:
        package = types.ModuleType("pesto")
        package.__path__ = [str(_package_folder())]
        sys.modules["pesto"] = package
    import pesto.data
    import pesto.model
    return pesto.model, pesto.data


def _checkpoint() -> dict:
    return torch.load(_package_folder() / "weights" / f"{CHECKPOINT}.ckpt", weights_only=True, map_location="cpu")


class Pesto:
    """The encoder (what is compressed), its front end and its pitch read-out."""

    def __init__(self):
        model_module, data_module = _pesto_modules()
        checkpoint = _checkpoint()
        hparams = checkpoint["hparams"]
        self.encoder = model_module.Resnet1d(**hparams["encoder"])
        # The checkpoint names the residual prefilter conv `prefilt_layers.0.weight` (a bare conv in the code that
        # trained it); pesto 2.0.1 wraps it in a Sequential with an activation, and its loader falls back to
        # strict=False and leaves that conv random. Here the conv is put back bare: RPA 0.992 on the task below
        # (0.996 with a LeakyReLU after it, so either reading of the original code works).
        self.encoder.prefilt_layers[0] = self.encoder.prefilt_layers[0][0]
        state = checkpoint["state_dict"]
        self.encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items()
                                      if k.startswith("encoder.")})
        self.encoder.eval()
        self.preprocessor = data_module.Preprocessor(hop_size=HOP_MS, sampling_rate=SAMPLE_RATE,
                                                     **checkpoint["hcqt_params"])
        self.crop = model_module.CropCQT(**hparams["pitch_shift"])
        self.bins_per_semitone = checkpoint["hcqt_params"]["bins_per_semitone"]
        self.shift = float(state["shift"])
        self.reduce = model_module.reduce_activations

    def frames(self, audio: np.ndarray) -> np.ndarray:
        """Tones [count, samples] -> encoder inputs [count, 1, 264]: the middle CQT frame of each."""
        with torch.no_grad():
            cqt = self.preprocessor(torch.from_numpy(audio))  # [count, time, harmonics, bins], dB
            middle = cqt[:, cqt.shape[1] // 2]
            return self.crop(middle * (math.log(10) / 10)).float().numpy()  # PESTO.forward's dB -> ln scaling

    def semitones(self, activations: torch.Tensor) -> np.ndarray:
        rolled = activations.float().roll(-round(self.shift * self.bins_per_semitone), -1)
        return self.reduce(rolled, reduction="alwa").numpy()


def tones(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio float32 [count, TONE_SAMPLES], f0 Hz [count]): harmonic tones in white noise (20 to -3.5 dB SNR)."""
    audio, f0 = noisy_harmonic_tones(count, seed, TONE_SAMPLES, SAMPLE_RATE, (80.0, 800.0), HARMONICS)
    return (0.1 * audio / np.abs(audio).max(1, keepdims=True)).astype(np.float32), f0


def raw_pitch_accuracy(model: Pesto, activations: torch.Tensor, f0: np.ndarray) -> float:
    predicted = model.semitones(activations)
    true = 69 + 12 * np.log2(f0 / 440.0)
    return float(np.mean(np.abs(predicted - true) <= 0.5))


def student(shrink: int = 2) -> torch.nn.Module:
    """A randomly initialised PESTO encoder `shrink` times narrower, for distillation."""
    model_module, _ = _pesto_modules()
    hparams = dict(_checkpoint()["hparams"]["encoder"])
    hparams["n_chan_layers"] = [max(2, c // shrink) for c in hparams["n_chan_layers"][:-1]] + \
        [hparams["n_chan_layers"][-1]]
    return model_module.Resnet1d(**hparams).eval()
