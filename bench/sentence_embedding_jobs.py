"""all-MiniLM-L6-v2 uploaded with its sentence-transformers files (modules.json, 1_Pooling: mean, 2_Normalize), so
that the job works on the sentence embedding (issue 10), through `run_folder_pipeline` (the worker's path): a
default int8 `ptq` job, a `kd` job into the rank-64 low-rank student, and `kd` into a 'layers' student (the
encoder's own layers, `--kd-keep` of its 6: `kd_layers`; `kd_layers_untrained` measures that student with 0
training steps; `kd_layers_ptq` then quantizes it). Prints the baseline's `sentence_embedding`, each stage's
embedding metrics and sizes, the distillation loss and the student's fidelity before/after, and the HF folder
check. The text is the real-models bench's (bench/real_models/minilm.py: 256 template sentences to train on, its
80 paraphrase sentences to evaluate).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.sentence_embedding_jobs [--jobs ptq,kd,kd_layers] [--kd-steps 60]
        [--kd-lr 1e-4] [--kd-keep 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

from bench.real_models import minilm
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from compression.specs.distill import LayersStudent, LowRankStudent
from compression.specs.training import TrainingSpec


def upload(directory: Path) -> tuple[Path, Path]:
    source = minilm.folder()
    archive = directory / "minilm_st.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as out:
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.name != ".gitattributes":
                out.write(path, path.relative_to(source).as_posix())
    texts = minilm.texts(256)
    dataset = directory / "text.jsonl"
    dataset.write_text("".join(json.dumps({"split": split, "text": text}) + "\n"
                               for split, rows in texts.items() for text in rows))
    return archive, dataset


def run(name: str, stages: list, archive: Path, dataset: Path, directory: Path) -> None:
    started = time.monotonic()
    result = run_folder_pipeline(archive, dataset, "feature-extraction", stages, EvaluationSpec(latency=False),
                                 RunContext(), directory / name)
    print(f"\n### `{name}`: {time.monotonic() - started:.1f} s")
    print(f"- baseline sentence_embedding {result.baseline.get('sentence_embedding')}, output_kind "
          f"{result.baseline.get('output_kind')}")
    for stage in result.stages:
        _print_stage(stage.method, stage.metrics)


def _print_stage(method_name: str, metrics: dict) -> None:
    method = metrics.get("method_metrics", {})
    folder = metrics.get("hf_folder", {})
    print(f"- {method_name}: cosine {metrics.get('cosine'):.4f}, similarity_spearman "
          f"{metrics.get('similarity_spearman'):.4f}"
          + (f"; loss {method['loss']}, student fidelity {method.get('student_fidelity')}" if "loss" in method
             else ""))
    if "student_spec" in method:
        print(f"- student {method['student_spec']}, {method['student_parameters']} parameters "
              f"({method['parameter_ratio']:.3f} of the teacher's), {method['train']['steps']} steps in "
              f"{method['train']['wall_time_s']:.1f} s")
    print(f"- .pt2 {metrics['size_bytes'] / 1e6:.2f} MB; HF folder {folder.get('size_bytes', 0) / 1e6:.2f} MB "
          f"zipped (the upload's fp32 model.safetensors "
          f"{(minilm.folder() / 'model.safetensors').stat().st_size / 1e6:.2f} MB)")
    if folder.get("written"):
        print(f"- HF folder ({folder['format']}, config changes {folder['config_changes']}) on "
              f"{folder['compared_output']}: {folder['relative_difference_to_stage_model']:.4f} of scale from the "
              f"stage model (stage to its float source {folder['stage_model_relative_difference_to_float']:.4f}, "
              f"folder {folder['folder_relative_difference_to_float']:.4f}); copied "
              f"{folder['sentence_transformers_files']}")
    else:
        print(f"- no HF folder: {folder.get('reason')}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", default="ptq,kd")
    parser.add_argument("--kd-steps", type=int, default=60)
    parser.add_argument("--kd-lr", type=float, default=1e-4)
    parser.add_argument("--kd-keep", type=int, default=3)
    args = parser.parse_args()
    training = TrainingSpec(steps=args.kd_steps, batch_size=32, lr=args.kd_lr, checkpoint_every=10_000)
    layers = LayersStudent(keep=args.kd_keep)
    jobs = {"ptq": [PTQSpec()],
            "kd": [KDSpec(student=LowRankStudent(rank=64), alpha=0.0, training=training)],
            "kd_layers": [KDSpec(student=layers, alpha=0.0, training=training)],
            "kd_layers_ptq": [KDSpec(student=layers, alpha=0.0, training=training), PTQSpec()],
            "kd_layers_untrained": [KDSpec(student=layers, alpha=0.0,
                                           training=training.model_copy(update={"steps": 0}))]}
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        archive, dataset = upload(directory)
        for name in args.jobs.split(","):
            run(name, jobs[name], archive, dataset, directory)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
