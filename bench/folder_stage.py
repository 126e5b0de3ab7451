"""What the folder benches (`bench.speech_recognition`, `bench.image_features`) share: their command line, one
stage run through the worker's folder path with latencies at batch 1 and 8, and how those are printed."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

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


def print_stages(archive: Path, dataset: Path, stages: dict, names: list[str], compile_models: bool, workdir: Path,
                 quality: Callable[[dict], str]) -> None:
    """Run each named stage of `stages` on the folder and print its seconds, program sizes, `quality(metrics)`,
    folder and latencies."""
    for name in names:
        seconds, stage = run_stage(archive, dataset, stages[name], compile_models, workdir / name)
        sizes = f"{stage['upload_size_bytes'] / 2**20:.1f} -> {stage['size_bytes'] / 2**20:.1f} MiB"
        print(f"  {name}: {seconds:.0f} s, program {sizes} ({stage['compression_ratio']:.2f}x smaller), "
              f"{quality(stage)}, {folder_status(stage)}")
        print_latencies(stage, name, "    ")


def smooth_images(directory: Path, size: int, train: int = 32, val: int = 16) -> Path:
    """Smooth colour fields: random 7x7x3 grids upsampled to `size` x `size`, as uint8 channels-last images, in a
    train and a val split."""
    generator = torch.Generator().manual_seed(0)
    grids = torch.rand(train + val, 3, 7, 7, generator=generator)
    fields = torch.nn.functional.interpolate(grids, size=(size, size), mode="bicubic", align_corners=False)
    pixels = (fields.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return save_train_val(directory / f"images{size}.npz", pixels, train)
