"""What the folder benches (`bench.speech_recognition`, `bench.image_features`) share: their command line, one
stage run through the worker's folder path with latencies at batch 1 and 8, and how those are printed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec


def stage_parser(doc: str, stages: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(stages), help=f"comma-separated of {stages}")
    parser.add_argument("--no-compile", action="store_true", help="time both models eagerly")
    return parser


def save_train_val(path: Path, rows: np.ndarray, train: int) -> Path:
    """The rows as an .npz of a `train` split (the first `train`) and a `val` split (the rest), unlabelled."""
    np.savez(path, **{"train.x": rows[:train], "val.x": rows[train:]})
    return path


def run_stage(archive: Path, dataset: Path, spec, compile_models: bool, workdir: Path) -> tuple[float, dict]:
    """Seconds and the stage's metrics of a one-stage folder job, its latencies measured at batch 1 and 8."""
    started = time.monotonic()
    evaluation = EvaluationSpec(latency_batch_sizes=[1, 8], compile=compile_models)
    result = run_folder_pipeline(archive, dataset, None, [spec], evaluation, RunContext(), workdir)
    return time.monotonic() - started, result.stages[0].metrics | {"upload_size_bytes": result.baseline["size_bytes"]}


def folder_status(stage: dict) -> str:
    """Whether the stage's Hugging Face folder was written, and if not why (its first 160 characters)."""
    folder = stage.get("hf_folder") or {}
    return "folder written" if folder.get("written") else f"folder not written: {str(folder.get('reason'))[:160]}"


def print_latencies(stage: dict, name: str, indent: str) -> None:
    """fp32's and the stage's latency per batch size, timed in alternation in one run (read their ratio)."""
    for size, fp32 in stage.get("reference_latency_ms", {}).items():
        compressed = stage["latency_ms"][size]
        print(f"{indent}batch {size}: fp32 {fp32:.1f} ms, {name} {compressed:.1f} ms ({fp32 / compressed:.2f}x)")
    if not stage.get("latency_reliable", True):
        print(f"{indent}latency unreliable: {stage['latency_unreliable']}")
