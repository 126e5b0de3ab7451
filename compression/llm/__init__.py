"""Weight-only quantization of causal language models (RTN, GPTQ, AWQ, HQQ, FP8) into Hugging Face folders in
compressed-tensors format, block by block; and their evaluation (perplexity, multiple choice, generation speed).

Needs `transformers` and `compressed-tensors`; imported only when this package is used.
"""

from compression.llm.apply import LLMPTQResult, apply_llm_ptq

__all__ = ["LLMPTQResult", "apply_llm_ptq"]
