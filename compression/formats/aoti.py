"""`model.aoti.pt2`: an AOTInductor package, the int8 program compiled ahead of time into a shared library.

Why: the int8 `.pt2` reaches its int8 kernels only through `torch.compile`, and every call of a compiled model
pays for its guards and wrapper before the first kernel runs; at batch 1 a small model spends most of its time
there. The package holds the same graph already lowered (freezing: int8 oneDNN kernels, weights prepacked) and
is called from C++ with no compilation in the user's process, so it starts at once and costs less per call
(`bench/int8_speed.py`). It holds one model per batch size (static shapes; see `write`): the job's latency
batch sizes, 1 and 32 by default.

What it costs: building it (a C++ compile, 15-60 s on 2 cores) and portability: it runs only with the torch
version that built it (2.13) on an x86-64 CPU with the instruction set it was compiled for (the worker's). It is
native code, which the service never accepts as an upload (`compression.archive` refuses `data/aotinductor/`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from compression.io import inputs_at_batch

KIND = "model.aoti.pt2"
DESCRIPTION = "AOTInductor package: one compiled model per batch size (torch 2.13, x86-64 CPU)"
PACKAGES = ("torch==2.13.*",)
RECIPE = '''import zipfile

import torch
from torch._inductor.package import load_package

# One model compiled ahead of time per batch size ("batch_1", "batch_32", ...): no torch.compile, no compiler.
# Batch 1: run the process with jemalloc (Linux: apt install libjemalloc2, then LD_PRELOAD=libjemalloc.so.2):
# each int8 kernel call allocates small blocks, and with glibc's malloc a small CNN costs up to 1.7x more per call.
names = sorted({{n.split("/")[3] for n in zipfile.ZipFile("{path}").namelist() if "/data/aotinductor/" in n}})
models = {{int(name.removeprefix("batch_")): load_package("{path}", name) for name in names}}
# outputs = models[batch_size](*inputs)  # CPU tensors
'''
BATCH_SIZES = (1, 32)


def write(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path,
          batch_sizes: tuple[int, ...] = BATCH_SIZES) -> Path:
    """Compile `model` ahead of time once per batch size (static shapes) into one package at `path`.

    Static, not one dynamic-batch model: in torch 2.13 a dynamic-batch package of an int8 CNN computed wrong
    outputs (cosine 0.4-0.93 to the program it came from), while static ones match it exactly."""
    from torch._inductor.package import package_aoti

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiled = {}
    for batch_size in sorted(set(batch_sizes)):
        inputs = inputs_at_batch(tuple(t.cpu() for t in example_inputs), batch_size)
        module = torch.export.export(model, inputs).module(check_guards=False)
        # Freezing is what turns quantize/dequantize + conv/linear into int8 kernels; inductor applies it only
        # when autograd is off.
        with inductor_config.patch(freezing=True), torch.no_grad():
            compiled[f"batch_{batch_size}"] = torch._inductor.aot_compile(
                module, inputs, options={"aot_inductor.package": True})
    package_aoti(str(path), compiled)
    return path


def batch_sizes_of(path: str | Path) -> list[int]:
    with zipfile.ZipFile(path) as archive:
        names = {name.split("/")[3] for name in archive.namelist() if "/data/aotinductor/" in name}
    return sorted(int(name.removeprefix("batch_")) for name in names)


class AotiModel(torch.nn.Module):
    """A loaded package as a module (the model compiled for the input's batch size), so it is evaluated and timed
    like the `.pt2` and never `torch.compile`d."""

    runs_without_torch_compile = True

    def __init__(self, path: str | Path):
        from torch._inductor.package import load_package

        super().__init__()
        self.path = Path(path)
        self.models = {size: load_package(str(path), f"batch_{size}") for size in batch_sizes_of(path)}

    def forward(self, *inputs: torch.Tensor):
        size = inputs[0].shape[0]
        if size not in self.models:
            raise ValueError(f"{self.path.name} holds models compiled for batch sizes {sorted(self.models)}, "
                             f"not {size}")
        return self.models[size](*inputs)


def load(path: str | Path) -> torch.nn.Module:
    return AotiModel(path)
