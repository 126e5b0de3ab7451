"""`packed.codebook.safetensors`: weights as indices into learned per-tensor codebooks and the weightless graph
(`compression.distill.codebook_format` documents the layout)."""

from compression.distill.codebook_format import load_codebook_model as load
from compression.distill.codebook_format import write_codebook_model as write

KIND = "packed.codebook.safetensors"
DESCRIPTION = "modelpress.codebook v1 (safetensors: codebook indices + graph)"
PACKAGES = ("modelpress", "torch==2.13.*", "safetensors")
RECIPE = '''from compression.distill.codebook_format import load_codebook_model

model = load_codebook_model("{path}")  # a runnable torch module
'''

__all__ = ["load", "write"]
