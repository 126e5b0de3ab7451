"""`packed.ipq.safetensors`: product-quantized weights (indices + centroids) and the weightless graph
(`compression.pq.packing` documents the layout)."""

from compression.pq.packing import load_ipq as load
from compression.pq.packing import save_ipq as write

KIND = "packed.ipq.safetensors"
DESCRIPTION = "modelpress.ipq v3 (safetensors: entropy-coded PQ indices, centroids, graph)"
PACKAGES = ("modelpress", "torch==2.13.*", "safetensors")
RECIPE = '''from compression.pq import load_ipq

model = load_ipq("{path}")  # a runnable torch module
'''

__all__ = ["load", "write"]
