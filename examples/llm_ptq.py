"""Weight-only LLM quantization: GPTQ int4 with groups of 128 of a causal language model uploaded as a Hugging
Face folder (.zip or .tar with config.json, *.safetensors and the tokenizer), calibrated and evaluated on a .jsonl
text dataset ({"split": "train"|"val", "text": ...} per line). The result is a compressed-tensors folder that
transformers and vLLM load.

    python examples/llm_ptq.py llama-folder.zip text.jsonl [out_dir]
"""

import sys

from common import run_example

from modelpress import LLMPTQ


def stages() -> list:
    return [LLMPTQ(algorithm="gptq", bits=4, group_size=128)]


if __name__ == "__main__":
    sys.exit(run_example(stages(), task="causal-lm"))
