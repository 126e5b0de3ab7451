"""Non-default options of every method on a few Hugging Face folder architectures: robustness, not speed. Tiny
random folders (the architecture sweep's) go through the service's path (`run_case`: the upload check, then
`run_folder_pipeline`) with each option set below; each row says ok, or the error and where it was raised.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_option_matrix [--cases bert:sequence-classification,...]
        [--options ptq_smoothquant,...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.hf_architecture_sweep import run_case
from compression.specs import IPQSpec, KDSpec, LLMPTQSpec, PruneSpec, PTQSpec, QATSpec
from compression.specs.distill import (
    DifferentiableQuantizationSpec,
    FunctionMatchingSpec,
    QuantizedDistillationSpec,
)
from compression.specs.ipq import QuantNoiseSpec

FEW = {"steps": 2, "batch_size": 8, "warmup_steps": 0}
SHORT_WINDOWS = {"calibration": {"samples": 4, "sequence_length": 16},
                 "evaluation": {"context_length": 16, "generation_tokens": 2}}
ENCODER_OPTIONS = {
    "ptq_smoothquant": lambda: PTQSpec(calibration_samples=16, smoothquant={"alpha": 0.5}),
    "ptq_emb4": lambda: PTQSpec(calibration_samples=16, embeddings={"bits": 4, "group_size": 16}),
    "ptq_sensitivity": lambda: PTQSpec(calibration_samples=16, sensitivity=True, selection_samples=16),
    "ptq_budget": lambda: PTQSpec(activations=None, weights={"bits": 4, "granularity": "per_group", "group_size": 16},
                                  max_metric_drop=0.5, selection_samples=16),
    "ptq_onnx_int8": lambda: PTQSpec(calibration_samples=16, extra_formats=["onnx_int8"]),
    "ptq_w8a8_general": lambda: PTQSpec(weights={"bits": 8}, activations={"bits": 8}, selection_samples=16),
    "qat_pact": lambda: QATSpec(quantizer="pact", calibration_samples=16, training=FEW),
    "qat_sawb_w8": lambda: QATSpec(quantizer="sawb", weight_bits=8, calibration_samples=16, training=FEW),
    "kd_low_rank": lambda: KDSpec(student={"kind": "low_rank", "energy": 0.8}, training=FEW),
    "kd_layers_mse": lambda: KDSpec(student={"kind": "layers", "keep": 1}, loss="mse", training=FEW),
    "function_matching": lambda: FunctionMatchingSpec(student={"kind": "low_rank", "rank": 8}, training=FEW),
    "quantized_distillation": lambda: QuantizedDistillationSpec(training=FEW),
    "differentiable_quantization": lambda: DifferentiableQuantizationSpec(training=FEW),
    "prune_lamp": lambda: PruneSpec(criterion="lamp", finetune=FEW),
    "prune_gradual": lambda: PruneSpec(schedule="gradual", finetune={"steps": 4, "batch_size": 8, "warmup_steps": 0},
                                       gradual={"prune_every": 1}),
    "prune_structured_distill": lambda: PruneSpec(kind="structured", sparsity=0.5, finetune=FEW, distill={}),
    "prune_synflow": lambda: PruneSpec(criterion="synflow", synflow_iterations=3),
    "ipq_rate_weight": lambda: IPQSpec(centroids=16, kmeans_iterations=2, training=FEW, num_groups=1,
                                       min_weights=256, rate_weight=0.3),
    "ipq_quant_noise": lambda: IPQSpec(centroids=16, kmeans_iterations=2, training=FEW, num_groups=2,
                                       min_weights=256, quant_noise={"rate": 0.1}),
    "quant_noise": lambda: QuantNoiseSpec(training=FEW),
}
LLM_OPTIONS = {
    "gptq4_embeddings_lm_head": lambda: LLMPTQSpec(algorithm="gptq", bits=4, group_size=32, embeddings="int8",
                                                   lm_head="quantize", **SHORT_WINDOWS),
    "hqq3": lambda: LLMPTQSpec(algorithm="hqq", bits=3, group_size=32, **SHORT_WINDOWS),
    "fp8": lambda: LLMPTQSpec(weights="fp8", **SHORT_WINDOWS),
    "gptq_act_order": lambda: LLMPTQSpec(algorithm="gptq", bits=4, group_size=32, gptq={"act_order": True},
                                         **SHORT_WINDOWS),
    "rtn2": lambda: LLMPTQSpec(algorithm="rtn", bits=2, group_size=32, **SHORT_WINDOWS),
}
CASES = ("bert:sequence-classification", "roberta:feature-extraction", "llama:sequence-classification",
         "gpt2:sequence-classification", "llama:causal-lm", "gpt2:causal-lm", "opt:causal-lm", "gemma:causal-lm",
         "phi3:causal-lm", "gpt_neox:causal-lm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help=f"comma-separated model_type:task (default: {','.join(CASES)})")
    parser.add_argument("--options", help=f"comma-separated of {list(ENCODER_OPTIONS) + list(LLM_OPTIONS)}")
    args = parser.parse_args()
    cases = args.cases.split(",") if args.cases else CASES
    chosen = set(args.options.split(",")) if args.options else None
    failed = total = 0
    print(f"load average at start: {os.getloadavg()[0]:.2f}\n")
    print("| model_type | task | option | result | s |\n|---|---|---|---|---|", flush=True)
    for case in cases:
        model_type, task = case.split(":")
        options = LLM_OPTIONS if task == "causal-lm" else ENCODER_OPTIONS
        for name, spec in options.items():
            if chosen and name not in chosen:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                row = run_case(model_type, task, name, spec(), Path(tmp))
            total += 1
            failed += not row["ok"]
            result = "ok" if row["ok"] else f"ERROR {row['error']} (at {row['where']})"
            print(f"| {model_type} | {task} | {name} | {result} | {row['seconds']} |", flush=True)
    print(f"\n{total - failed}/{total} ok; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
