"""Image-text models uploaded as causal LMs, through the service's path: a tiny randomly initialised model of each
family (a 2-layer text decoder, hidden 64; a 2-layer vision tower whose MLP width, 72, no group of 32 divides),
saved with `save_pretrained`, zipped, read by the upload check (task, and the widths its group-size check reads)
and run by `run_folder_pipeline` with llm_ptq GPTQ int4 (groups of 32) and weight-only int4 `ptq` on the
exported program. Printed per family and method: ok or the first line of the error, seconds, perplexity of the
stage against the upload's, and whether the stage's Hugging Face folder was written (llm_ptq's stage is its
folder, measured as transformers loads it). Nothing is downloaded.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.image_text_lms [gemma3 mistral3 ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

TEXT = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
VISION = {"hidden_size": 32, "intermediate_size": 72, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
CONFIGS = {
    # transformers builds Gemma 3 as a causal LM; the others only as image-text-to-text
    "gemma3": {"text_config": {**TEXT, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]},
               "vision_config": {**VISION, "num_hidden_layers": 2},
               "mm_tokens_per_image": 4, "image_token_index": 300, "boi_token_index": 301, "eoi_token_index": 302},
    "mistral3": {"text_config": {"model_type": "mistral", **TEXT},
                 "vision_config": {"model_type": "pixtral", **VISION, "num_hidden_layers": 2, "head_dim": 16},
                 "image_token_index": 300},
    "qwen2_5_vl": {"text_config": {"model_type": "qwen2_5_vl_text", **TEXT,
                                   "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
                   "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 72, "num_heads": 2,
                                     "out_hidden_size": 64, "patch_size": 8, "window_size": 16,
                                     "fullatt_block_indexes": [1]},
                   "image_token_id": 300, "video_token_id": 301, "vision_start_token_id": 302},
    "llava": {"text_config": {"model_type": "llama", **TEXT},
              "vision_config": {"model_type": "clip_vision_model", **VISION, "num_hidden_layers": 2,
                                "projection_dim": 32},
              "image_token_index": 300},
    "paligemma": {"text_config": {"model_type": "gemma", **TEXT},
                  "vision_config": {"model_type": "siglip_vision_model", **VISION, "num_hidden_layers": 2,
                                    "projection_dim": 64},
                  "image_token_index": 300, "projection_dim": 64},
    "idefics3": {"text_config": {"model_type": "llama", **TEXT}, "vision_config": {**VISION, "num_hidden_layers": 2},
                 "image_token_id": 300, "scale_factor": 2},
}


def image_text_folder(model_type: str, folder: Path):
    """The model (in memory) and its folder with a word-level tokenizer."""
    from transformers import AutoConfig

    from bench.hf_architecture_sweep import save_tokenizer
    from compression.causal_lm_class import AutoCausalLM

    torch.manual_seed(0)
    model = AutoCausalLM.from_config(AutoConfig.for_model(model_type, **CONFIGS[model_type])).eval()
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return model


def main() -> None:
    from bench.hf_architecture_sweep import text_dataset
    from compression.archive.hf_folder import read_hf_folder
    from compression.context import RunContext
    from compression.llm.pipeline import run_folder_pipeline
    from compression.specs import EvaluationSpec, LLMPTQSpec, PTQSpec
    from tests.hf_folders import zip_bytes

    stages = {"llm_gptq": LLMPTQSpec(algorithm="gptq", bits=4, group_size=32,
                                     calibration={"samples": 4, "sequence_length": 16},
                                     evaluation={"context_length": 16}),
              "ptq_w4": PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32}, activations=None)}
    print("| model_type | class | task, widths | method | result | s | perplexity (upload) | folder |")
    print("|---|---|---|---|---|---|---|---|")
    for model_type in sys.argv[1:] or CONFIGS:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model = image_text_folder(model_type, tmp / "source")
            (tmp / "model.zip").write_bytes(zip_bytes(tmp / "source"))
            folder = read_hf_folder(tmp / "model.zip")
            data = text_dataset(tmp)
            for method, spec in stages.items():
                started = time.monotonic()
                try:
                    result = run_folder_pipeline(tmp / "model.zip", data, "causal-lm", [spec],
                                                 EvaluationSpec(latency=False), RunContext(), tmp / method)
                    metrics = result.stages[0].metrics
                    written = (metrics.get("hf_folder") or {"written": True}).get("written")
                    outcome = (f"ok | {time.monotonic() - started:.1f} | {metrics['perplexity']:.1f} "
                               f"({result.baseline['perplexity']:.1f}) | {'written' if written else 'none'}")
                except Exception as exc:  # noqa: BLE001 - the bench reports every failure and goes on
                    outcome = f"ERROR {type(exc).__name__}: {str(exc)[:150]} | {time.monotonic() - started:.1f} | |"
                print(f"| {model_type} | {type(model).__name__} | {folder.task}, {folder.block_linear_widths} | "
                      f"{method} | {outcome} |", flush=True)


if __name__ == "__main__":
    main()
