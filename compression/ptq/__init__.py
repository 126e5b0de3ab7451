"""Post-training int8 quantization for x86 CPUs through torchao's pt2e flow (see `quantize.py`)."""

from compression.ptq.apply import apply_ptq
from compression.ptq.quantize import quantize_int8

__all__ = ["apply_ptq", "quantize_int8"]
