"""Quantization building blocks.

affine (uniform affine math), observers (activation ranges), weights (integer and float weight formats), graph
(layers of an exported model, BatchNorm folding), simulation (switchable per-layer fake quantization),
diagnostics (per-layer SQNR, sensitivity, accuracy budget), packed (bit-packed safetensors format) and general
(`apply_general_ptq`, the PTQ path for everything beyond the default int8 x86 recipe).
"""
