"""Size and speed of a model, measured the same way for the original and the compressed one.

Latency is the median wall time of `repeats` forward passes after `warmup` passes, without autograd, in eval
mode. With `compile=True` the model runs under `torch.compile` with inductor freezing on: freezing folds the
weights into constants, which is what lets inductor replace quantize/dequantize + conv/linear patterns of an
int8 pt2e model by real int8 (oneDNN) kernels. Without it a Q/DQ model runs in fp32 plus extra work, slower than
the original. Both models are always timed with the same settings, so their ratio is meaningful.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

from compression.evaluate import device_of
from compression.io import inputs_at_batch
from compression.modes import evaluating


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


def parameter_count(model: torch.nn.Module) -> int:
    """Weights and biases, whatever they are stored as.

    A converted pt2e model keeps its int8 weights as plain tensor attributes (`_frozen_param0`), not as
    parameters, so those are counted too; quantization scales, zero points and batch-norm statistics are not.
    """
    count = sum(p.numel() for p in model.parameters())
    if isinstance(model, torch.fx.GraphModule):
        for node in model.graph.nodes:
            if node.op == "get_attr" and "frozen_param" in str(node.target):
                count += _attribute(model, node.target).numel()
    return count


def latency_ms(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], batch_size: int | None = None,
               compile: bool = False, warmup: int = 3, repeats: int = 20) -> float:
    """Median milliseconds per forward pass at `batch_size` (default: the batch of `example_inputs`)."""
    batch_size = batch_size or example_inputs[0].shape[0]
    return latency_profile(model, example_inputs, [batch_size], compile, warmup, repeats)[batch_size]


def latency_profile(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], batch_sizes: list[int],
                    compile: bool = False, warmup: int = 3, repeats: int = 20) -> dict[int, float]:
    """{batch size: median ms}; one compiled module serves every batch size (recompiled per static shape)."""
    device = device_of(model)
    with evaluating(model), inductor_config.patch(freezing=True):
        runner = torch.compile(model, dynamic=False) if compile else model
        return {b: _median_ms(runner, tuple(t.to(device) for t in inputs_at_batch(example_inputs, b)), warmup,
                              repeats) for b in batch_sizes}


def _median_ms(runner, inputs: tuple[torch.Tensor, ...], warmup: int, repeats: int) -> float:
    for _ in range(max(1, warmup)):  # under torch.compile the first call compiles
        runner(*inputs)
    synchronize = torch.cuda.synchronize if inputs[0].is_cuda else (lambda: None)
    timings = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        runner(*inputs)
        synchronize()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings) * 1000


def _attribute(model: torch.nn.Module, target: str):
    owner, _, name = target.rpartition(".")
    return getattr(model.get_submodule(owner) if owner else model, name)
