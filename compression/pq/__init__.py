"""Product quantization (PQ / iterative PQ, optionally + int8) and Quant-Noise training (Stock et al. 2020,
Fan et al. 2020). `apply_ipq` / `apply_quant_noise` are the stages; `load_ipq` runs a packed artifact."""

from compression.pq.apply import apply_ipq, apply_quant_noise
from compression.pq.kmeans import KMeansResult, kmeans
from compression.pq.packing import load_ipq, save_ipq
from compression.pq.parametrizations import PQWeight, QuantNoise, set_noise

__all__ = ["KMeansResult", "PQWeight", "QuantNoise", "apply_ipq", "apply_quant_noise", "kmeans", "load_ipq",
           "save_ipq", "set_noise"]
