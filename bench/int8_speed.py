"""int8 at every batch size: our int8 `.pt2` against compiled fp32 and ONNX Runtime fp32 / static int8 (issue 14).

Models (random weights: speed does not depend on them): a ResNet-18-shaped CNN at 224x224 (3 channels, ImageNet
layout), the Fashion-MNIST ResNets of the QAT / distillation (ResNet-8) and pruning (ResNet-14) benchmarks,
calibrated on Fashion-MNIST images, and a BERT-mini-sized transformer encoder (`compression.zoo.tiny_transformer`:
4 layers, width 256, 64 tokens). Each is quantized as the `ptq` stage does it (`compression.ptq.quantize_int8`,
written and read back as `model.pt2`), and by ONNX Runtime (`compression.ptq.onnx_int8`: u8s8 QDQ, per-channel
weights, the same calibration batches).

Columns, each a median ms per call, all candidates of one model and batch size timed in alternation in one
process (`compression.measure.time_in_alternation`, spread = interquartile range over median):

- `fp32`: the float model under `torch.compile` (freezing, C++ wrapper, like `int8`);
- `int8 py`: our int8 `.pt2` under `torch.compile` with freezing and inductor's default Python wrapper (how jobs
  time it: it compiles in a quarter of the time);
- `int8`: the same with inductor's C++ wrapper (`cpp_wrapper`), as the `model.pt2` recipe runs it;
- `int8 no guards`: that compiled model called under `torch.compiler.set_stance(skip_guard_eval_unsafe=True)`
  (after it was warmed up at each batch size), which skips most of Dynamo's guard checks per call;
- `int8 aoti`: the `model.aoti.pt2` artifact (`compression.formats.aoti`): the int8 program compiled ahead of
  time by AOTInductor, one static model per batch size (full run only: it takes 20-60 s per model to build here);
- `ort fp32`, `ort int8`: ONNX Runtime sessions (intra-op threads = the torch threads).

Each thread count runs in its own process (inductor bakes the thread count into the kernels it compiles), once
with glibc's malloc and once with jemalloc preloaded (`LD_PRELOAD`, when `libjemalloc.so.2` is installed: Debian's
`libjemalloc2`): at batch 1 a oneDNN int8 call allocates and frees a dozen small blocks (memory descriptors, its
output, scratch), and glibc's malloc is about a quarter of a small call's time; ONNX Runtime allocates from its own
arena, so the allocator is what tells the two apart at batch 1 (docs/quantization.md).

    python -m bench.int8_speed [--quick] [--threads 1 2] [--allocators glibc jemalloc] [--budget-s 4]
                               [--models resnet8 ...] [--aoti]

Prints a markdown table and writes bench/results/int8_speed.json.
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F
from torch import nn

from bench.common.data import fashion_mnist_subset
from bench.common.report import markdown, write_results
from compression import formats, zoo
from compression.evaluate import output_tensor
from compression.measure import time_in_alternation
from compression.onnx_export import export_float
from compression.ptq import quantize_int8
from compression.ptq.onnx_int8 import OnnxRuntimeModel, write_onnxruntime_int8
from compression.zoo.resnet import BasicBlock

BATCH_SIZES = (1, 32)
CALIBRATION_BATCHES = 4


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (7x7 stride-2 stem, max-pool, 2+2+2+2 basic blocks of 64-512 channels) from
    the zoo's BasicBlock: torchvision itself does not import beside this torch build."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, channels = [], 64
        for stage, width in enumerate((64, 128, 256, 512)):
            for block in range(2):
                blocks.append(BasicBlock(channels, width, 2 if stage > 0 and block == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _fashion_batches() -> list[torch.Tensor]:
    images = torch.from_numpy(fashion_mnist_subset(train=32 * CALIBRATION_BATCHES, test=1)["train.x"])
    return list(images.split(32))


def build(name: str) -> tuple[str, nn.Module, list[tuple[torch.Tensor, ...]]]:
    """(description, fp32 model in eval mode, calibration input tuples) of one benchmark model."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if name == "resnet18_224":
        images = [torch.randn(32, 3, 224, 224, generator=generator) for _ in range(CALIBRATION_BATCHES)]
        return "ResNet-18 layout, 3x224x224", ResNet18().eval(), [(x,) for x in images]
    if name == "resnet8_fmnist":
        model = zoo.build("resnet", in_channels=1, num_classes=10, depth_mult=0.5)
        return "ResNet-8 (QAT/KD bench), 1x28x28", model, [(x,) for x in _fashion_batches()]
    if name == "resnet14_fmnist":
        model = zoo.build("resnet", in_channels=1, num_classes=10)
        return "ResNet-14 (prune bench), 1x28x28", model, [(x,) for x in _fashion_batches()]
    if name == "encoder":
        model = zoo.build("tiny_transformer", vocab_size=8192, max_length=64, num_classes=2, dim=256, heads=4,
                          layers=4, ff_dim=1024)
        ids = [torch.randint(0, 8192, (32, 64), generator=generator) for _ in range(CALIBRATION_BATCHES)]
        return "encoder 4x256, 64 tokens", model, [(x,) for x in ids]
    raise ValueError(f"unknown model {name}")


MODELS = ("resnet18_224", "resnet8_fmnist", "resnet14_fmnist", "encoder")


class Prepared(nn.Module):
    """A callable that is timed as it is (already compiled, or another runtime)."""

    runs_without_torch_compile = True

    def __init__(self, run):
        super().__init__()
        object.__setattr__(self, "run", run)  # not a submodule: eval() must not reach an exported module

    def forward(self, *inputs):
        return self.run(*inputs)


def candidates(fp32: nn.Module, calibration: list, workdir: Path, aoti: bool) -> tuple[dict[str, tuple], dict]:
    """{name: (callable, inductor settings it compiles under)} of one model, and what building them cost (seconds,
    bytes)."""
    example = tuple(t[:8] for t in calibration[0])
    info: dict = {}
    started = time.monotonic()
    int8 = quantize_int8(fp32, example, iter(calibration))
    pt2 = formats.format_of("model.pt2").write(int8, example, workdir / "model_int8.pt2")
    info["quantize_s"] = round(time.monotonic() - started, 1)
    info["pt2_bytes"] = pt2.stat().st_size
    started = time.monotonic()
    onnx_fp32 = workdir / "fp32.onnx"
    import onnx

    onnx.save(export_float(fp32, example), str(onnx_fp32))
    onnx_int8 = write_onnxruntime_int8(fp32, example, calibration, workdir / "model_int8.onnx").path
    info["onnx_s"] = round(time.monotonic() - started, 1)
    info["onnx_int8_bytes"] = onnx_int8.stat().st_size

    load = formats.format_of("model.pt2").load
    # Inductor settings each torch candidate compiles under (held while it compiles: `torch.compile(options=...)`
    # does not apply freezing early enough for the int8 patterns, and then fails on `onednn.qconv_prepack`).
    frozen = {"freezing": True}
    cpp = {"freezing": True, "cpp_wrapper": True}
    int8_cpp = torch.compile(load(pt2), dynamic=False)
    runners = {"fp32": (torch.compile(fp32, dynamic=False), cpp),
               "int8 py": (torch.compile(load(pt2), dynamic=False), frozen),
               "int8": (int8_cpp, cpp),
               "int8 no guards": (without_guard_checks(int8_cpp), cpp)}
    if aoti:
        started = time.monotonic()
        package = formats.format_of("model.aoti.pt2").write(int8, example, workdir / "model_int8.aoti.pt2",
                                                            batch_sizes=BATCH_SIZES)
        runners["int8 aoti"] = (formats.load("model.aoti.pt2", package), {})
        info["aoti_build_s"] = round(time.monotonic() - started, 1)
        info["aoti_bytes"] = package.stat().st_size
    runners["ort fp32"] = (OnnxRuntimeModel(onnx_fp32), {})
    runners["ort int8"] = (OnnxRuntimeModel(onnx_int8), {})
    info["int8_eager"] = int8
    return runners, info


def without_guard_checks(compiled):
    """`compiled` called under `torch.compiler.set_stance(skip_guard_eval_unsafe=True)`: Dynamo then checks only
    the guards that tell its cached graphs apart (here: the batch size), not every guard of the graph, on each
    call. Unsafe in general (a changed dtype or module attribute goes unnoticed), fine for a frozen model called
    with the shapes it was warmed up with."""

    def run(*inputs):
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=True):
            return compiled(*inputs)

    return run


def warm_up(runners: dict, inputs: tuple[torch.Tensor, ...], int8_eager: nn.Module) -> tuple[dict, dict]:
    """Run (so compile) each candidate once at this batch size under its inductor settings. Returns the
    candidates as modules `time_in_alternation` runs as they are, and each one's mean cosine to the int8 program
    run eagerly (the Q/DQ graph in float: a check that every form computes the same function)."""
    prepared, cosine = {}, {}
    with torch.no_grad():
        expected = output_tensor(int8_eager(*inputs)).float().reshape(len(inputs[0]), -1)
    for name, (run, settings) in runners.items():
        with torch.no_grad(), inductor_config.patch(settings):
            got = output_tensor(run(*inputs)).float().reshape(len(inputs[0]), -1)
        cosine[name] = round(float(F.cosine_similarity(got, expected, dim=1).mean()), 5)
        prepared[name] = run if hasattr(run, "runs_without_torch_compile") else Prepared(run)
    return prepared, cosine


def measure(names: list[str], budget_s: float, aoti: bool) -> dict:
    """{model: {"description", "build": {...}, "batch": {b: {candidate: Timing json}}}} at this process's threads."""
    results = {}
    for name in names:
        description, fp32, calibration = build(name)
        with tempfile.TemporaryDirectory(prefix="int8-speed-") as scratch:
            started = time.monotonic()
            runners, info = candidates(fp32, calibration, Path(scratch), aoti)
            int8_eager = info.pop("int8_eager")
            example = tuple(t[:8] for t in calibration[0])
            per_batch = {}
            for batch_size in BATCH_SIZES:
                prepared, info[f"cosine_to_int8_eager_b{batch_size}"] = warm_up(
                    runners, tuple(t[:batch_size] for t in calibration[0]), int8_eager)
                timings = time_in_alternation(prepared, example, [batch_size], compile=False, budget_s=budget_s)
                per_batch[batch_size] = {candidate: timings[candidate][batch_size].to_json() for candidate in prepared}
            info["total_s"] = round(time.monotonic() - started, 1)
        results[name] = {"description": description, "build": info, "batch": per_batch}
        print(f"[{torch.get_num_threads()} thread(s)] {name}: done in {info['total_s']} s", file=sys.stderr)
    return results


def rows(threads: int, allocator: str, measured: dict) -> list[dict]:
    table = []
    for result in measured.values():
        for batch_size, timings in result["batch"].items():
            ms = {candidate: timing["median_ms"] for candidate, timing in timings.items()}
            worst = max(timings.values(), key=lambda t: t["spread"])
            row = {"model": result["description"], "threads": threads, "allocator": allocator, "batch": batch_size}
            row |= {f"{candidate} ms": f"{value:.3f}" for candidate, value in ms.items()}
            row["int8 / ort int8"] = f"{ms['int8'] / ms['ort int8']:.2f}x"
            if "int8 aoti" in ms:
                row["aoti / ort int8"] = f"{ms['int8 aoti'] / ms['ort int8']:.2f}x"
            row["fp32 / int8"] = f"{ms['fp32'] / ms['int8']:.2f}x"
            row["int8 py / int8"] = f"{ms['int8 py'] / ms['int8']:.2f}x"
            row["int8 / int8 no guards"] = f"{ms['int8'] / ms['int8 no guards']:.2f}x"
            row["worst spread"] = f"{worst['spread']:.0%}"
            row["reliable"] = "yes" if all(t["reliable"] for t in timings.values()) else "no"
            table.append(row)
    return table


JEMALLOC = ctypes.util.find_library("jemalloc")  # "libjemalloc.so.2" when installed, which LD_PRELOAD finds


def allocator_environment(allocator: str) -> dict[str, str]:
    """Environment of a child process that runs with `allocator` ("glibc": the process's own malloc)."""
    if allocator == "glibc":
        return {}
    if JEMALLOC is None:
        raise SystemExit("--allocators jemalloc: libjemalloc.so.2 is not installed (apt-get install libjemalloc2)")
    return {"LD_PRELOAD": " ".join(filter(None, [os.environ.get("LD_PRELOAD"), JEMALLOC]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one thread, 1 s budget per batch size, no AOTI")
    parser.add_argument("--threads", type=int, nargs="+", default=None, help="thread counts (default 1 2)")
    parser.add_argument("--allocators", nargs="+", choices=("glibc", "jemalloc"), default=None,
                        help="malloc of each child process (default: both when jemalloc is installed)")
    parser.add_argument("--budget-s", type=float, default=None, help="timing budget per model and batch size")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--aoti", action="store_true", help="add the AOTInductor column (default in a full run)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one thread count, in its own process
    args = parser.parse_args()
    budget = args.budget_s or (1.0 if args.quick else 4.0)
    if args.child:
        torch.set_num_threads(args.child)
        print(json.dumps(measure(args.models, budget, args.aoti)))
        return
    aoti = args.aoti or not args.quick

    threads = args.threads or ([1] if args.quick else [1, 2])
    allocators = args.allocators or (["glibc", "jemalloc"] if JEMALLOC else ["glibc"])
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    measured = {}
    for count in threads:
        for allocator in allocators:
            command = [sys.executable, "-m", "bench.int8_speed", "--child", str(count), "--budget-s", str(budget),
                       "--models", *args.models] + (["--aoti"] if aoti else [])
            environment = os.environ | {"OMP_NUM_THREADS": str(count)} | allocator_environment(allocator)
            output = subprocess.run(command, env=environment, check=True, stdout=subprocess.PIPE, text=True).stdout
            measured[f"{count} {allocator}"] = json.loads(output.strip().splitlines()[-1])
    table = [row for count in threads for allocator in allocators
             for row in rows(count, allocator, measured[f"{count} {allocator}"])]
    columns = list(dict.fromkeys(key for row in table for key in row))
    report = {"threads": threads, "allocators": allocators, "budget_s": budget, "measured": measured,
              "wall_s": round(time.monotonic() - started),
              "environment": {"torch": torch.__version__, "cpus": os.cpu_count(),
                              "processor": platform.processor() or platform.machine(),
                              "load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0]}}
    print(markdown(table, columns))
    print(f"\nload average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; {report['wall_s']} s; "
          f"JSON: {write_results('int8_speed.json', report)}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
