"""`model.pt2`: a `torch.export` program (float, fake-quantized, or int8 with quantize/dequantize nodes).

An int8 program calls `torch.ops.quantized_decomposed.*`, which torch registers only when
`torch.ao.quantization.fx._decomposed` is imported: without that import `torch.export.load` fails with "failed to
resolve torch.ops.quantized_decomposed.dequantize_per_channel". Embedding tables quantized by
`compression.ptq.embeddings` use plain aten ops and need nothing more.
"""

from __future__ import annotations

from pathlib import Path

import torch

from compression.io import export_model, load_model, save_program

KIND = "model.pt2"
DESCRIPTION = "torch.export program (.pt2)"
PACKAGES = ("torch==2.13.*",)
RECIPE = '''import torch
import torch.ao.quantization.fx._decomposed  # registers the int8 quantize/dequantize ops int8 programs call

model = torch.export.load("{path}").module()
# int8 kernels on x86: compile with inductor freezing and call it under torch.no_grad() (freezing, which lowers
# the int8 patterns, only applies without autograd; eager runs the dequantized fp32 graph). The C++ wrapper cuts
# the fixed cost per call (up to 2x faster at batch 1) for about 10 s more compile time per input shape, and
# running the process with jemalloc (Linux: LD_PRELOAD=libjemalloc.so.2) another 1.2-1.6x at batch 1.
torch._inductor.config.freezing = True
torch._inductor.config.cpp_wrapper = True
compiled = torch.compile(model)
# with torch.no_grad():
#     outputs = compiled(*inputs)
'''


def write(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | Path) -> Path:
    """Export `model` (keeping its dynamic dims) and save it without debugging metadata."""
    return save_program(export_model(model, example_inputs), path)


def load(path: str | Path) -> torch.nn.Module:
    """The program as a module in eval mode, read with the checked loader (the file may come from anyone); the
    recipe's plain `torch.export.load` is for users loading their own downloads."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (see the module docstring)

    return load_model(path)
