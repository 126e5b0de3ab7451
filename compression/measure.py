"""Size and speed of a model, measured the same way for the original and the compressed one.

Latency is a median wall time per forward pass (after `warmup` passes), without autograd, in eval mode; models
compared with each other are timed in alternation (`compare_latency`). With `compile=True` the model runs under `torch.compile` with inductor freezing on: freezing folds the
weights into constants, which is what lets inductor replace quantize/dequantize + conv/linear patterns of an
int8 pt2e model by real int8 (oneDNN) kernels. Without it a Q/DQ model runs in fp32 plus extra work, slower than
the original. Both models are always timed with the same settings, so their ratio is meaningful.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
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
               compile: bool = False, warmup: int = 3, repeats: int = 10, rounds: int = 3) -> float:
    """Median milliseconds per forward pass at `batch_size` (default: the batch of `example_inputs`)."""
    batch_size = batch_size or example_inputs[0].shape[0]
    return latency_profile(model, example_inputs, [batch_size], compile, warmup, repeats, rounds)[batch_size]


def latency_profile(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], batch_sizes: list[int],
                    compile: bool = False, warmup: int = 3, repeats: int = 10, rounds: int = 3) -> dict[int, float]:
    """{batch size: median ms} of one model."""
    return compare_latency({"model": model}, example_inputs, batch_sizes, compile, warmup, repeats,
                           rounds)["model"]


def compare_latency(models: dict[str, torch.nn.Module], example_inputs: tuple[torch.Tensor, ...],
                    batch_sizes: list[int], compile: bool = False, warmup: int = 3, repeats: int = 10,
                    rounds: int = 3) -> dict[str, dict[int, float]]:
    """{name: {batch size: ms}} for several models timed in alternation.

    Each round times every model for `repeats` passes; a figure is the median over rounds of the per-round
    medians. On a shared CPU the load changes from second to second, and timing one model after the other
    would charge that change to whichever model ran second.
    """
    with ExitStack() as stack:
        stack.enter_context(inductor_config.patch(freezing=True))
        runners = {}
        for name, model in models.items():
            stack.enter_context(evaluating(model))
            runners[name] = torch.compile(model, dynamic=False) if compile else model
        result: dict[str, dict[int, float]] = {name: {} for name in models}
        for batch_size in batch_sizes:
            inputs = {name: tuple(t.to(device_of(model)) for t in inputs_at_batch(example_inputs, batch_size))
                      for name, model in models.items()}
            for name, runner in runners.items():
                for _ in range(max(1, warmup)):  # under torch.compile the first call compiles
                    runner(*inputs[name])
            per_round: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(rounds):
                for name, runner in runners.items():
                    per_round[name].append(_median_ms(runner, inputs[name], repeats))
            for name, values in per_round.items():
                result[name][batch_size] = statistics.median(values)
    return result


def _median_ms(runner, inputs: tuple[torch.Tensor, ...], repeats: int) -> float:
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
