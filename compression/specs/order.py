"""Which stages may follow which, checked at submission (torch-free).

Most methods hand the next stage an ordinary float model. A few hand on a model that is already in its final,
deployable number format; training or re-quantizing it would undo that format, so they must come last.
"""

from __future__ import annotations

# method -> why nothing can follow it
FINAL_STAGES = {
    "ptq": "its output is a quantized deployable (int8 quantize/dequantize graph or packed low-bit weights) that "
           "cannot be trained or quantized again",
    "ipq": "its output is a product-quantized model (indices plus codebooks); further training or quantization "
           "would undo the packing (use quant_noise before ipq, and put ipq last)",
    "differentiable_quantization": "its output is a codebook-quantized model that cannot be trained or "
                                   "quantized again",
    "llm_ptq": "its output is a compressed-tensors Hugging Face folder (packed low-bit weights) that cannot be "
               "trained or quantized again",
}


def order_problems(methods: list[str]) -> list[str]:
    problems = []
    for index, method in enumerate(methods[:-1]):
        if method in FINAL_STAGES:
            following = methods[index + 1]
            problems.append(f"stage {index + 1} ({following}) cannot follow stage {index} ({method}): "
                            f"{FINAL_STAGES[method]}; make {method} the last stage")
    return problems
