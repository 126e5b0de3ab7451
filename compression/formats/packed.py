"""`packed.safetensors`: bit-packed low-bit weights, their scales and the weightless graph
(`compression.quant.packed` documents the layout)."""

from compression.quant.packed import load_packed as load
from compression.quant.packed import write_packed as write

KIND = "packed.safetensors"
DESCRIPTION = "modelpress.packed v1 (safetensors: bit-packed weights + graph)"
PACKAGES = ("modelpress", "torch==2.13.*", "safetensors")
RECIPE = '''from compression.quant.packed import load_packed

model = load_packed("{path}")  # a runnable torch module, weights dequantized
'''

__all__ = ["load", "write"]
