"""Issue 6 benchmark, pipelines: does chaining compression stages beat each stage alone at equal size?

A ResNet-style CNN (compression.zoo "resnet") trained on Fashion-MNIST goes through two pipelines and their single
stages, every configuration as one `compression.pipeline.run_pipeline` job (the code path the service's worker
runs, with the stage specs a user would submit), so the figures are the ones the service would report:

    fp32                                   the upload
    prune                                  50% unstructured, LAMP, short finetune
    prune -> kd(input student) -> ptq      the pruned model distilled back towards the upload, then int8
    prune -> ptq                           no distillation
    prune (longer finetune) -> ptq         control: as many training steps as prune + kd, without a teacher
    ptq                                    int8 default (pt2e x86)
    quant_noise -> ipq                     Quant-Noise finetuning, then iPQ with int8 centroids
    ipq                                    the same iPQ + int8 spec on the upload
    quant_noise                            alone (an fp32 model)

Every configuration runs once per seed (--seeds, default 5: RunContext.seed sets data order, noise and k-means;
the upload is the same), so a difference can be read against the seed-to-seed spread. Columns: mean top-1 on the
test subset (min-max over seeds), bytes of the stage's main artifact (the file the job reports as its model),
compression ratio against the upload's .pt2, the job's wall time (the whole run_pipeline call: load, baseline
evaluation, stages and their evaluations; the stages' own wall_time_s are in the JSON), and for int8 rows the
batch-32 latency ratio fp32/int8, all models compiled with torch.compile and timed in alternation (the same
`compare_latency` the pipeline uses; done once outside the jobs so the intermediate fp32 stages are not compiled).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.pipelines.run --quick   # ResNet-8, 12k train / 2k test images
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.pipelines.run           # ResNet-14, 60k / 10k, longer schedules

The fp32 model is the one bench/ipq/run.py trains and caches (bench/results/cache/ipq_resnet_b*_*_*.pt2, same
recipe): reused when present, trained the same way otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.datasets import fashion_mnist
from bench.ipq.run import fp32_model_path  # the iPQ bench's cached fp32 model
from compression.context import RunContext
from compression.data import Dataset
from compression.io import load_program
from compression.measure import compare_latency
from compression.modes import eval_mode
from compression.pipeline import EXAMPLE_BATCH, run_pipeline
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, PruneSpec, PTQSpec, QuantNoiseSpec
from compression.specs.distill import InputStudent
from compression.specs.ipq import QuantNoiseConfig
from compression.specs.training import TrainingSpec

RESULTS = Path(__file__).resolve().parents[1] / "results"
SETTINGS = {
    True: {"blocks": 1, "train_samples": 12_000, "train_steps": 300, "test_samples": 2000,
           "prune_steps": 150, "kd_steps": 300, "noise_steps": 100, "group_steps": 60, "groups": 2,
           "centroids": 64, "kmeans_iterations": 15, "calibration_samples": 256},
    False: {"blocks": 2, "train_samples": 60_000, "train_steps": 3000, "test_samples": 10_000,
            "prune_steps": 600, "kd_steps": 1200, "noise_steps": 600, "group_steps": 300, "groups": 3,
            "centroids": 256, "kmeans_iterations": 15, "calibration_samples": 512},
}
LATENCY_BATCH = 32


def configurations(s: dict) -> list[tuple[str, str, list]]:
    """(name, size group, stages). Rows in one size group have comparable main-artifact sizes."""
    prune = PruneSpec(sparsity=0.5, criterion="lamp",
                      finetune=TrainingSpec(steps=s["prune_steps"], batch_size=64, lr=1e-3))
    prune_long = prune.model_copy(update={"finetune": TrainingSpec(steps=s["prune_steps"] + s["kd_steps"],
                                                                   batch_size=64, lr=1e-3)})
    kd = KDSpec(student=InputStudent(), training=TrainingSpec(steps=s["kd_steps"], batch_size=64, lr=5e-4))
    ptq = PTQSpec(calibration_samples=s["calibration_samples"])  # the int8 x86 default
    noise = QuantNoiseSpec(noise=QuantNoiseConfig(rate=0.1, kind="proxy"),
                           training=TrainingSpec(steps=s["noise_steps"], batch_size=64, lr=5e-4))
    ipq = IPQSpec(centroids=s["centroids"], centroid_dtype="int8", num_groups=s["groups"],
                  kmeans_iterations=s["kmeans_iterations"],
                  training=TrainingSpec(steps=s["group_steps"], batch_size=64, lr=5e-4))
    return [
        ("prune", "fp32 .pt2", [prune]),
        ("quant_noise", "fp32 .pt2", [noise]),
        ("ptq", "int8 .pt2", [ptq]),
        ("prune -> ptq", "int8 .pt2", [prune, ptq]),
        ("prune -> kd(input) -> ptq", "int8 .pt2", [prune, kd, ptq]),
        (f"prune ({s['prune_steps'] + s['kd_steps']}-step finetune) -> ptq", "int8 .pt2", [prune_long, ptq]),
        ("ipq (int8 centroids)", "iPQ packed", [ipq]),
        ("quant_noise -> ipq (int8 centroids)", "iPQ packed", [noise, ipq]),
    ]


def weight_sparsity(model: nn.Module) -> float | None:
    """Fraction of exact zeros among the float conv/linear weights (tensors of 2+ dimensions) of a stage's model."""
    weights = [p for p in model.parameters() if p.dim() >= 2 and p.is_floating_point()]
    if not weights:
        return None
    return round(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights), 4)


def run_all(settings: dict, model_path: Path, dataset_path: Path, scratch: Path, latency: bool,
            seeds: list[int]) -> dict:
    """Every configuration once per seed (RunContext.seed: data order, noise, k-means; the upload is fixed).
    A row's top-1 and times are means over seeds; its bytes and artifacts are those of the first seed."""
    evaluation = EvaluationSpec(latency=False)
    rows, int8_models, baseline = [], {}, None
    for index, (name, group, stages) in enumerate(configurations(settings)):
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            started = time.monotonic()
            result = run_pipeline(model_path, dataset_path, stages, evaluation, RunContext(seed=seed),
                                  scratch / f"job{index}_seed{seed}")
            job_wall = time.monotonic() - started
            baseline = baseline or result.baseline
            stages_out = []
            for stage in result.stages:
                m = stage.metrics
                stages_out.append({"method": stage.method, "accuracy": m["accuracy"], "size_bytes": m["size_bytes"],
                                   "model_artifact": m["model_artifact"], "wall_time_s": m["wall_time_s"],
                                   "weight_sparsity": weight_sparsity(stage.model),
                                   "artifacts": {a.name: a.size_bytes for a in stage.artifacts}})
            runs.append({"seed": seed, "accuracy": result.final["accuracy"],
                         "top1_agreement": result.final.get("top1_agreement"), "job_wall_s": round(job_wall, 2),
                         "stage_wall_s": round(sum(st["wall_time_s"] for st in stages_out), 2),
                         "stages": stages_out})
            if seed == seeds[0] and result.stages[-1].method == "ptq":
                int8_models[name] = result.stages[-1].model
        accuracies = [run["accuracy"] for run in runs]
        first = runs[0]["stages"][-1]
        row = {"config": name, "size_group": group, "accuracy": sum(accuracies) / len(accuracies),
               "accuracy_min": min(accuracies), "accuracy_max": max(accuracies),
               "size_bytes": first["size_bytes"], "model_artifact": first["model_artifact"],
               "compression_ratio": baseline["size_bytes"] / first["size_bytes"],
               "stage_wall_s": round(sum(run["stage_wall_s"] for run in runs) / len(runs), 1),
               "job_wall_s": round(sum(run["job_wall_s"] for run in runs) / len(runs), 1),
               "weight_sparsity": first["weight_sparsity"], "seeds": runs}
        sparse = [v for k, v in first["artifacts"].items() if k.endswith("_sparse.safetensors")]
        if sparse:
            row["sparse_file_bytes"] = sparse[0]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "seeds"}), file=sys.stderr)
    fp32_row = {"config": "fp32", "size_group": "fp32 .pt2", "accuracy": baseline["accuracy"],
                "accuracy_min": baseline["accuracy"], "accuracy_max": baseline["accuracy"],
                "size_bytes": baseline["size_bytes"], "model_artifact": model_path.name, "compression_ratio": 1.0,
                "stage_wall_s": 0.0, "job_wall_s": None, "seeds": []}
    rows.insert(0, fp32_row)
    timings = None
    if latency and int8_models:
        timings = int8_latency(model_path, dataset_path, int8_models)
        for row in rows:
            if row["config"] in timings["speedup"]:
                row["int8_speedup_b32"] = timings["speedup"][row["config"]]
    return {"rows": rows, "latency": timings}


def int8_latency(model_path: Path, dataset_path: Path, int8_models: dict[str, nn.Module]) -> dict:
    """Batch-32 ms of the fp32 upload and every int8 result, compiled and timed in alternation."""
    program = load_program(model_path)
    reference = eval_mode(program.module())
    dataset = Dataset.load(dataset_path, ["x"])
    example = dataset.split("val").head(EXAMPLE_BATCH).inputs
    models = {"fp32": reference, **int8_models}
    started = time.monotonic()
    try:
        ms = compare_latency(models, example, [LATENCY_BATCH], compile=True)
    except Exception as exc:  # noqa: BLE001 - a benchmark row without latency is still a row
        print(f"latency failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"[:500], "speedup": {}}
    result = {"batch_size": LATENCY_BATCH, "compiled": True,
              "ms": {n: round(v[LATENCY_BATCH], 4) for n, v in ms.items()},
              "seconds": round(time.monotonic() - started, 1)}
    result["speedup"] = {n: round(ms["fp32"][LATENCY_BATCH] / ms[n][LATENCY_BATCH], 2) for n in int8_models}
    print(f"latency {result}", file=sys.stderr)
    return result


def conclusions(rows: list[dict]) -> list[str]:
    """Plain statements, comparing only rows whose main artifacts have comparable sizes. A difference counts when
    it is larger than the spread over seeds of both rows (max - min); otherwise it is called a tie."""
    by = {r["config"]: r for r in rows}

    def verdict(a: str, b: str) -> tuple[float, float, str]:
        diff = 100 * (by[a]["accuracy"] - by[b]["accuracy"])
        spread = 100 * max(by[x]["accuracy_max"] - by[x]["accuracy_min"] for x in (a, b))
        return diff, spread, "tie" if abs(diff) <= spread else ("better" if diff > 0 else "worse")

    def versus(a: str, b: str) -> str:
        diff, spread, word = verdict(a, b)
        return f"{diff:+.2f} points vs {b} ({word}; seed spread {spread:.2f})"

    fp32 = by["fp32"]
    chain, ptq, prune_ptq = "prune -> kd(input) -> ptq", "ptq", "prune -> ptq"
    control = next(r["config"] for r in rows if r["config"].startswith("prune (") and r["config"].endswith("-> ptq"))
    int8 = [r for r in rows if r["size_group"] == "int8 .pt2"]
    sizes = [r["size_bytes"] for r in int8]
    ipq_alone, ipq_chain = "ipq (int8 centroids)", "quant_noise -> ipq (int8 centroids)"
    sparse = by["prune"].get("sparse_file_bytes") or fp32["size_bytes"]
    speedups = [r["int8_speedup_b32"] for r in int8 if "int8_speedup_b32" in r]
    alone = by[ptq]["size_bytes"]
    pruned_first = min(r["size_bytes"] for r in int8 if r["config"] != ptq)
    # The .pt2's zip members are deflated (compression.deflate), and zeros deflate well: pruning first shrinks the
    # int8 file even though every weight is still stored.
    pruning_buys = (f"pruning first makes the deflated int8 file {alone / pruned_first:.2f}x smaller than int8 alone"
                    if pruned_first < 0.95 * alone else "pruning first does not make the int8 file smaller")
    lines = [
        f"Comparable sizes: (a) the int8 .pt2 rows ({min(sizes):,}-{max(sizes):,} bytes, "
        f"{fp32['size_bytes'] / max(sizes):.2f}-{fp32['size_bytes'] / min(sizes):.2f}x): {pruning_buys}; "
        "(b) the two iPQ rows "
        f"({by[ipq_chain]['size_bytes']:,} / {by[ipq_alone]['size_bytes']:,} bytes, "
        f"{by[ipq_alone]['compression_ratio']:.1f}x); (c) fp32-sized .pt2: fp32, prune alone, quant_noise alone "
        f"(prune's sparse file is {sparse:,} bytes, {fp32['size_bytes'] / sparse:.2f}x, "
        f"{'larger' if sparse > max(sizes) else 'smaller'} than the int8 .pt2).",
        f"(a) {chain} {100 * by[chain]['accuracy']:.2f}%: {versus(chain, ptq)}; {versus(chain, prune_ptq)}; "
        f"{versus(chain, control)}. Job time {by[chain]['job_wall_s']:.0f} s vs {by[ptq]['job_wall_s']:.0f} s "
        "for ptq alone." + (f" Batch-32 int8 speedup {min(speedups):.2f}-{max(speedups):.2f}x across the int8 "
                            "rows: pruning first buys no speed (the zeros are still multiplied)." if speedups else ""),
        f"(b) {ipq_chain} {100 * by[ipq_chain]['accuracy']:.2f}%: {versus(ipq_chain, ipq_alone)}.",
        f"(c) prune alone {100 * by['prune']['accuracy']:.2f}% and quant_noise alone "
        f"{100 * by['quant_noise']['accuracy']:.2f}% vs fp32 {100 * fp32['accuracy']:.2f}%.",
    ]
    kd_sparsity = [st["weight_sparsity"] for st in by[chain]["seeds"][0]["stages"] if st["method"] == "kd"]
    if kd_sparsity and kd_sparsity[0] is not None and kd_sparsity[0] < 0.01:
        lines.append(f"Note: the kd stage (input student) does not hold the pruning masks: the pruned model's 50% "
                     f"zeros are retrained away (weight sparsity after kd: {kd_sparsity[0]:.2%}), so in this "
                     "pipeline KD is a dense finetune that merely starts from the pruned weights.")
    verdicts = {pipeline: verdict(pipeline, single)[2] for pipeline, single in ((chain, ptq), (ipq_chain, ipq_alone))}
    answer = ("yes" if all(v == "better" for v in verdicts.values())
              else "partly" if any(v == "better" for v in verdicts.values()) else "no")
    lines.append(f"Answer: {answer}. At equal size, {chain} vs ptq alone: {verdicts[chain]}; {ipq_chain} vs ipq "
                 f"alone: {verdicts[ipq_chain]} (a tie is a difference within the seed-to-seed spread).")
    return lines


def print_table(rows: list[dict], settings: dict, timings: dict | None, seeds: list[int]) -> None:
    print(f"\nResNet ({settings['blocks']} block(s)/stage) on Fashion-MNIST, {settings['train_samples']:,} training / "
          f"{settings['test_samples']:,} test images; prune 50% LAMP + {settings['prune_steps']} finetune steps, kd "
          f"{settings['kd_steps']} steps, Quant-Noise (proxy, p=0.1) {settings['noise_steps']} steps, iPQ K="
          f"{settings['centroids']} int8 centroids, {settings['groups']} groups x {settings['group_steps']} steps; "
          f"{torch.get_num_threads()} thread(s); top-1 and times are means over seeds {seeds} (min-max)\n")
    print(f"| config | size group | top-1 % (min-max) | main artifact | bytes | x smaller | job wall s (stages s) | "
          f"int8 b{LATENCY_BATCH} speedup |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        speed = f"{r['int8_speedup_b32']:.2f}x" if "int8_speedup_b32" in r else ""
        wall = "" if r["job_wall_s"] is None else f"{r['job_wall_s']:.0f} ({r['stage_wall_s']:.0f})"
        spread = "" if not r["seeds"] else f" ({100 * r['accuracy_min']:.2f}-{100 * r['accuracy_max']:.2f})"
        print(f"| {r['config']} | {r['size_group']} | {100 * r['accuracy']:.2f}{spread} | {r['model_artifact']} | "
              f"{r['size_bytes']:,} | {r['compression_ratio']:.2f} | {wall} | {speed} |")
    if timings and "ms" in timings:
        print(f"\nbatch-{LATENCY_BATCH} compiled ms (seed {seeds[0]}'s models): "
              + ", ".join(f"{n} {v:.3f}" for n, v in timings["ms"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-8, 12k training images, short schedules")
    parser.add_argument("--no-latency", action="store_true", help="skip the compiled int8 latency")
    parser.add_argument("--seeds", type=int, default=5, help="runs per configuration (RunContext seeds 0..n-1)")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    settings = SETTINGS[args.quick]
    started = time.monotonic()
    arrays = fashion_mnist()
    n_train, n_test = settings["train_samples"], settings["test_samples"]
    subset = {"train.x": arrays["train.x"][:n_train], "train.y": arrays["train.y"][:n_train],
              "val.x": arrays["test.x"][:n_test], "val.y": arrays["test.y"][:n_test]}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        dataset_path = scratch / "fashion_mnist.npz"
        np.savez(dataset_path, **subset)
        example = (torch.from_numpy(arrays["test.x"][:EXAMPLE_BATCH]),)
        model_path = fp32_model_path(settings, Dataset.from_arrays(subset, ["x"]), example)
        outcome = run_all(settings, model_path, dataset_path, scratch, not args.no_latency, seeds)
    rows = outcome["rows"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / ("pipelines_quick.json" if args.quick else "pipelines.json")
    report = {"settings": settings, "seeds": seeds, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "rows": rows, "latency": outcome["latency"], "total_s": round(time.monotonic() - started, 1)}
    output.write_text(json.dumps(report, indent=2))  # kept even if the summary below fails
    print_table(rows, settings, outcome["latency"], seeds)
    lines = conclusions(rows)
    print("\n" + "\n".join(lines))
    output.write_text(json.dumps(report | {"conclusions": lines}, indent=2))
    print(f"\nwritten to {output} ({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
