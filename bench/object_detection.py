"""Object detectors at their real size through an object-detection job: size and speed of each method's model.

No detector's weights ship in a package on the index, so the models are the published architectures with random
weights: DETR-ResNet-50 (facebook/detr-resnet-50's config: transformers' own ResNet-50, six encoder and six decoder
layers of width 256, 100 queries, 91 COCO classes; 41.6M parameters) and RT-DETR-R50 (RTDetrConfig's defaults,
PekingU/rtdetr_r50vd's shape: 300 queries, 80 classes, 42.7M), their class heads scaled so that their detections
are not near-ties (`bench.hf_architecture_sweep.spread_class_scores`). Their quality figures (detection_map
against the upload's own detections) say what each method keeps of the upload's function on random images; what it
would keep of a trained detector's accuracy needs a trained detector.

Each row is one job run by the function the worker runs (`run_folder_pipeline`, task object-detection) on random
uint8 images at --size: the program's bytes and batch-1 / batch-4 latency under torch.compile against the float
program's, timed in alternation by the pipeline.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.object_detection [--models detr] [--rows int8,w8] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.hf_architecture_sweep import spread_class_scores
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import KDSpec, PruneSpec, PTQSpec
from compression.specs.common import EvaluationSpec
from compression.specs.distill import LayersStudent
from compression.specs.ptq import WeightQuantSpec
from compression.specs.training import TrainingSpec
from tests.hf_folders import DETECTION_PROCESSOR, zip_bytes

ROWS = {
    "int8": ("int8 PTQ (default)", [PTQSpec(calibration_samples=32)]),
    # (no ONNX copy: with one, this row of DETR-ResNet-50 ran past 11 minutes on 2 cores and was stopped)
    "w8": ("weight-only int8", [PTQSpec(activations=None, export_onnx=False)]),
    "w4": ("weight-only int4 (g32)", [PTQSpec(activations=None, export_onnx=False, weights=WeightQuantSpec(
        bits=4, granularity="per_group", group_size=32))]),
    "prune": ("structured pruning 30 %", [PruneSpec(kind="structured", sparsity=0.3)]),
    "decoder3": ("KD -> 3 of 6 decoder layers (20 steps)", [KDSpec(student=LayersStudent(keep=3), training=TrainingSpec(
        steps=20, batch_size=4, lr=1e-4, checkpoint_every=10_000))]),
}


def detr_resnet_50():
    from transformers import DetrConfig, DetrForObjectDetection

    # facebook/detr-resnet-50's shape with transformers' ResNet-50 (what the worker makes of its timm backbone)
    backbone = {"model_type": "resnet", "out_features": ["stage4"]}
    return DetrForObjectDetection(DetrConfig(backbone_config=backbone, num_labels=91))


def rt_detr_r50():
    from transformers import RTDetrConfig, RTDetrForObjectDetection

    return RTDetrForObjectDetection(RTDetrConfig(num_labels=80))


MODELS = {"detr": ("DETR-ResNet-50", detr_resnet_50), "rt_detr": ("RT-DETR-R50", rt_detr_r50)}


def write_folder(build, folder: Path) -> Path:
    torch.manual_seed(0)
    model = spread_class_scores(build().eval())
    model.save_pretrained(folder)
    processor = {**DETECTION_PROCESSOR, "do_resize": False}  # the images come at the size the model runs at
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def images(path: Path, size: int) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, **{f"{split}.x": rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8)
                      for split, rows in (("train", 48), ("val", 16))})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated of {list(MODELS)}")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated of {list(ROWS)}")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}; images {args.size}x{args.size}")
    evaluation = EvaluationSpec(latency_batch_sizes=[1, 4], compile=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = images(root / "images.npz", args.size)
        for key in args.models.split(","):
            name, build = MODELS[key]
            archive = root / f"{key}.zip"
            archive.write_bytes(zip_bytes(write_folder(build, root / key)))
            print(f"\n{name}\n\n| row | detection_map | cosine | program MiB | x smaller | b1 ms | b4 ms | x faster b1 "
                  "| x faster b4 | folder | job s |\n|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
            baseline_printed = False
            for row in args.rows.split(","):
                label, stages = ROWS[row]
                started = time.monotonic()
                try:
                    result = run_folder_pipeline(archive, dataset, "object-detection", stages, evaluation,
                                                 RunContext(), root / f"{key}-{row}")
                except Exception as exc:  # noqa: BLE001 - a row that fails is reported and the others still run
                    print(f"| {label} | failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]} |", flush=True)
                    continue
                seconds = time.monotonic() - started
                base, stage = result.baseline, result.stages[-1].metrics
                if not baseline_printed:
                    print(f"| fp32 (upload) | {base['metric_points']:.1f} | 1.000 | {base['size_bytes'] / 2**20:.1f} "
                          f"| 1.00x | {base['latency_ms']['1']:.0f} | {base['latency_ms']['4']:.0f} | 1.00x | 1.00x "
                          "| | |", flush=True)
                    baseline_printed = True
                folder = stage.get("hf_folder", {})
                written = f"{folder.get('size_bytes', 0) / 2**20:.1f} MiB" if folder.get("written") else "none"
                print(f"| {label} | {stage['metric_points']:.1f} | {stage['cosine']:.3f} | "
                      f"{stage['size_bytes'] / 2**20:.1f} | {stage['compression_ratio']:.2f}x | "
                      f"{stage['latency_ms']['1']:.0f} | {stage['latency_ms']['4']:.0f} | "
                      f"{base['latency_ms']['1'] / stage['latency_ms']['1']:.2f}x | "
                      f"{base['latency_ms']['4'] / stage['latency_ms']['4']:.2f}x | {written} | {seconds:.0f} |",
                      flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
