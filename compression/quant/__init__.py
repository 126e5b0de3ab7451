"""Quantization building blocks: affine math, observers, packed low-bit formats."""
