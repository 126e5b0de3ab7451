"""The pitch benches' task set: harmonic tones with a known f0 in white noise, shared by CREPE and PESTO."""

from __future__ import annotations

import numpy as np


def noisy_harmonic_tones(count: int, seed: int, samples: int, sample_rate: int, f0_range: tuple[float, float],
                         max_harmonics: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(audio float64 [count, samples] with unit-variance tone plus noise, f0 Hz [count]): f0 log-uniform in
    `f0_range`, harmonics k up to Nyquist (and `max_harmonics`) at amplitude 1/k with random phases, white noise at
    20 to -3.5 dB SNR."""
    rng = np.random.default_rng(seed)
    f0 = np.exp(rng.uniform(np.log(f0_range[0]), np.log(f0_range[1]), count))
    t = np.arange(samples) / sample_rate
    audio = np.zeros((count, samples))
    for row, frequency in enumerate(f0):
        highest = int(sample_rate / 2 / frequency)
        for k in range(1, min(highest, max_harmonics or highest) + 1):
            audio[row] += np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 2 * np.pi)) / k
    audio /= audio.std(1, keepdims=True)
    audio += rng.uniform(0.1, 1.5, (count, 1)) * rng.normal(size=audio.shape)
    return audio, f0
