"""A causal LM at GPT-2 small's size through the service's path: time, peak memory, perplexity, size and
compiled latency of one stage with its default spec (`gptq`, `rtn4`: llm_ptq int4 in groups of 32, which writes a
compressed-tensors folder and measures that folder as transformers loads it; `gptq_all` also quantizes the output
layer and the embedding table).

The model is GPT-2's architecture at full size (124M parameters, 50,257-token vocabulary, tied output layer)
with random weights, read by a word-level tokenizer (nothing is downloaded); 64 training and 32 evaluation rows of
about 55 tokens. Perplexities are a random model's (about the vocabulary's size): the figures that matter are
the resources and the ratios.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.causal_lm_scale --method ptq     # or w4, kd, prune

`--model mixtral`: a mixture of experts instead (Mixtral's architecture, 8 experts of which each token uses 2,
hidden 512, 4 layers, a 32,000-token vocabulary: 83M parameters), whose program runs each expert as its own
linear layers on every token (`compression.moe_experts`); llm_ptq quantizes each expert's linear layers
(`compression.llm.moe`). `--model mamba`: a state-space model at Mamba-130m's shape, whose mixers' out_proj and
dt_proj llm_ptq keeps float (their weight initialisation reads them: `compression.llm.init_reads`).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, LLMPTQSpec, PruneSpec, PTQSpec
from tests.hf_folders import CORPUS, save_tokenizer, zip_bytes

STAGES = {"ptq": PTQSpec(),
          "w4": PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32}, activations=None),
          "kd": KDSpec(student={"kind": "layers", "keep": 6}, training={"steps": 4}),
          "prune": PruneSpec(),
          **{name: LLMPTQSpec(algorithm=algorithm, bits=4, group_size=32,
                              calibration={"samples": 16, "sequence_length": 128},
                              evaluation={"context_length": 128})
             for name, algorithm in (("gptq", "gptq"), ("rtn4", "rtn"))},
          # the output layer and the embedding table quantized too (int4 groups of 32; int8 per row)
          "gptq_all": LLMPTQSpec(algorithm="gptq", bits=4, group_size=32, lm_head="quantize", embeddings="int8",
                                 calibration={"samples": 16, "sequence_length": 128},
                                 evaluation={"context_length": 128})}


def gpt2_small_folder(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    save_tokenizer(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, bos_token_id=2, eos_token_id=2)).save_pretrained(folder)
    return folder


def mixtral_folder(folder: Path) -> Path:
    from transformers import MixtralConfig, MixtralForCausalLM

    save_tokenizer(folder)
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=32000, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
                           bos_token_id=2, eos_token_id=2)
    MixtralForCausalLM(config).save_pretrained(folder)
    return folder


def mamba_folder(folder: Path) -> Path:
    """Mamba-130m's shape (hidden 768, 24 layers, state 16, 50,280-token vocabulary, tied output layer)."""
    from transformers import MambaConfig, MambaForCausalLM

    save_tokenizer(folder)
    torch.manual_seed(0)
    config = MambaConfig(vocab_size=50280, hidden_size=768, num_hidden_layers=24, state_size=16, expand=2,
                         conv_kernel=4, bos_token_id=2, eos_token_id=2)
    MambaForCausalLM(config).save_pretrained(folder)
    return folder


MODELS = {"gpt2": gpt2_small_folder, "mixtral": mixtral_folder, "mamba": mamba_folder}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(STAGES), default="ptq")
    parser.add_argument("--model", choices=sorted(MODELS), default="gpt2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "model.zip").write_bytes(zip_bytes(MODELS[args.model](tmp / args.model)))
        rows = [" ".join(CORPUS[(i + k) % len(CORPUS)] for k in range(6)) for i in range(96)]
        (tmp / "rows.jsonl").write_text("\n".join(json.dumps({"split": "train" if i < 64 else "val", "text": text})
                                                  for i, text in enumerate(rows)))
        started = time.monotonic()
        result = run_folder_pipeline(tmp / "model.zip", tmp / "rows.jsonl", "causal-lm", [STAGES[args.method]],
                                     EvaluationSpec(), RunContext(), tmp / "work")
        stage, baseline = result.stages[0].metrics, result.baseline
        # llm_ptq's stage is its folder, measured as transformers loads it
        folder = stage.get("hf_folder") or ({"written": True, "size_bytes": stage["size_bytes"]}
                                            if args.method.startswith(("gptq", "rtn")) else {})
        print(json.dumps({
            "model": args.model, "method": args.method, "seconds": round(time.monotonic() - started),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 1),
            "perplexity": [round(baseline["perplexity"], 1), round(stage["perplexity"], 1)],
            "parameters": baseline["parameters"], "compression_ratio": round(stage["compression_ratio"], 2),
            "latency_ms_fp32": baseline.get("latency_ms"), "latency_ms": stage.get("latency_ms"),
            "hf_folder": folder.get("written"), "hf_folder_reason": str(folder.get("reason", ""))[:200],
            "hf_folder_bytes": folder.get("size_bytes"), "upload_bytes": (tmp / "model.zip").stat().st_size,
            "hf_folder_relative_difference": folder.get("relative_difference_to_stage_model")}, indent=1))


if __name__ == "__main__":
    main()
