"""Quantization-aware training: STE, LSQ, PACT and SAWB quantizers, graph preparation, and the "qat" stage."""

from compression.qat.apply import apply_qat
from compression.qat.prepare import calibrate, freeze_batchnorm, materialize, prepare_qat

__all__ = ["apply_qat", "calibrate", "freeze_batchnorm", "materialize", "prepare_qat"]
