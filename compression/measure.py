"""Size and speed of a model, measured the same way for the original and the compressed one.

Latency is a median wall time per forward pass, without autograd, in eval mode. Models compared with each other
are timed in alternation (`time_in_alternation`): round after round, each model runs a few passes, and each
round gives one figure per model. On a shared CPU the load changes from second to second; timing one model after
the other would charge that change to whichever ran second. Rounds continue until the spread of every model's
figures (interquartile range over median) is under `SPREAD_TARGET` (after at least five rounds, three when a round
takes a second or more), or the time budget ends. A timing reports its
median, its spread and the load seen while it ran, and says it is not reliable when the spread stayed high or other
processes wanted the CPUs this one was timing on (`Timing.reliable`).

With `compile=True` the model runs under `torch.compile` with inductor freezing on: freezing folds the weights
into constants, which is what lets inductor replace quantize/dequantize + conv/linear patterns of an int8 pt2e
model by real int8 (oneDNN) kernels. Without it a Q/DQ model runs in fp32 plus extra work, slower than the
original. Jobs compile with inductor's default Python wrapper: its C++ wrapper (`cpp_wrapper`, which the `.pt2`
recipe turns on) cuts the fixed cost per call of a small model at batch 1 (1.06-2x in `bench/int8_speed.py`) but
took 15-20 s instead of about 4 s to compile an int8 graph on a cold cache, once per batch size, which would
triple a first job's time; the job's `.pt2` figures are therefore a little pessimistic at batch 1. Both models are
always timed with the same settings, so their ratio is meaningful. A model is compiled once per process
(`compiled`), however many times it is timed. A model with a true `runs_without_torch_compile` attribute (an ONNX
Runtime session, `compression.ptq.onnx_int8`; an AOTInductor package) is timed as it is.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch._inductor.config as inductor_config
from torch._dynamo.utils import counters

from compression.evaluate import device_of
from compression.frozen_weight_cache import allow_cached_frozen_onednn_weights
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


SPREAD_TARGET = 0.10
# Each round runs a model for at least this long (several passes of a fast model), so one figure is not the noise
# of a single sub-millisecond call.
ROUND_S = 0.01
MIN_ROUNDS, MAX_ROUNDS = 5, 200
# A round that takes seconds (a large model at batch 32: one pass of each model) is itself a long average; three
# of them judge the spread as well as five short ones, and each round saved is seconds of the job (a 22M-parameter
# encoder: 3.2 s per round at batch 32, 6.4 s of a 76 s job).
SLOW_ROUND_S, MIN_SLOW_ROUNDS = 1.0, 3
BUDGET_S = 2.0  # per batch size
COMPILED_KEPT = 4
# Inductor settings held while models compile (the first call of each batch size compiles): they apply only then,
# and `torch.compile(options=...)` turns freezing on too late for the int8 patterns. No cpp_wrapper: see above.
COMPILE_SETTINGS = {"freezing": True}
_COMPILED: list[tuple[torch.nn.Module, Callable]] = []  # (model, its compiled form), newest last
# Compiled forms already run at an input shape: their next call there runs, it does not compile.
_WARM: set[tuple[int, tuple]] = set()


@dataclass
class Timing:
    """One model's latency at one batch size: median ms over rounds, spread (IQR / median), rounds, the load."""

    median_ms: float
    spread: float
    rounds: int
    load_average: float  # the 1-minute load average at the end of the timing
    busy_cpus: float  # median number of other processes running at once, sampled each round
    reliable: bool
    reason: str | None = None  # why it is not reliable

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "spread": round(self.spread, 4), "rounds": self.rounds,
                "load_average": round(self.load_average, 2), "busy_cpus": self.busy_cpus,
                "reliable": self.reliable, "reason": self.reason}


def spread(values: list[float]) -> float:
    """Interquartile range over median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    median = statistics.median(values)
    return (q3 - q1) / median if median > 0 else math.inf


def verdict(figures: list[float], busy_cpus: float, cpus: int, threads: int) -> tuple[bool, str | None]:
    """Whether a timing can be presented: its spread is under the target and, while it ran, the other processes
    that wanted a CPU left this process's `threads` the CPUs they need."""
    if spread(figures) >= SPREAD_TARGET:
        return False, f"spread {spread(figures):.0%} (interquartile range over median) stayed over " \
                      f"{SPREAD_TARGET:.0%} within the time budget"
    if busy_cpus + threads > cpus:
        return False, f"timed under load: {busy_cpus:g} other processes running on {cpus} CPUs while this one " \
                      f"used {threads} threads"
    return True, None


def alternate(run_round: Callable[[], dict[str, float]], budget_s: float = BUDGET_S, min_rounds: int = MIN_ROUNDS,
              max_rounds: int = MAX_ROUNDS, clock: Callable[[], float] = time.monotonic,
              sample_busy: Callable[[], int] = lambda: 0) -> tuple[dict[str, list[float]], list[int]]:
    """Call `run_round` (one figure per model) until every model's spread is under the target (after at least
    `min_rounds`, or `MIN_SLOW_ROUNDS` when the first round took `SLOW_ROUND_S` or more), `max_rounds` were run or
    `budget_s` is spent (at least the minimum run regardless). Returns the figures per model and `sample_busy()`
    taken after each round."""
    figures: dict[str, list[float]] = {}
    busy: list[int] = []
    started = clock()
    deadline = started + budget_s
    while True:
        for name, value in run_round().items():
            figures.setdefault(name, []).append(value)
        busy.append(sample_busy())
        rounds = len(busy)
        if rounds == 1 and clock() - started >= SLOW_ROUND_S:
            min_rounds = min(min_rounds, MIN_SLOW_ROUNDS)
        if rounds >= max_rounds or (rounds >= min_rounds and (
                clock() > deadline or all(spread(values) < SPREAD_TARGET for values in figures.values()))):
            return figures, busy


def other_processes_running(own_threads: int = 1) -> int:
    """Threads running on a CPU right now (procs_running in /proc/stat), less this process's `own_threads` (its
    OpenMP threads may still spin between rounds); 0 where unknown."""
    try:
        with open("/proc/stat") as stat:
            running = next(int(line.split()[1]) for line in stat if line.startswith("procs_running "))
    except (OSError, StopIteration, ValueError):
        return 0
    return max(0, running - own_threads)


def compiled(model: torch.nn.Module) -> Callable:
    """`torch.compile(model)`, made once per model and process (the last few models are kept): timing the upload
    alongside every stage's model compiles it once, not once per stage, and a job's evaluation under compile
    (`run_compiled`) shares the graphs its timing uses."""
    for index, (kept, runner) in enumerate(_COMPILED):
        if kept is model:
            _COMPILED.append(_COMPILED.pop(index))
            return runner
    allow_cached_frozen_onednn_weights()  # a tenant's next job finds these graphs in its compile cache
    runner = torch.compile(model, dynamic=False)
    _COMPILED.append((model, runner))
    for dropped, dropped_runner in _COMPILED[:-COMPILED_KEPT]:
        _WARM.difference_update({key for key in _WARM if key[0] == id(dropped_runner)})
    del _COMPILED[:-COMPILED_KEPT]
    return runner


def run_compiled(model: torch.nn.Module) -> Callable:
    """A function that runs `model` compiled exactly as `time_in_alternation(compile=True)` runs it (inductor
    freezing on, the same compiled form), so evaluating a model before timing it compiles it once for both."""
    runner = compiled(model)

    def run(*inputs):
        with inductor_config.patch(freezing=True):
            output = runner(*inputs)
        _WARM.add((id(runner), _shapes(inputs)))
        return output
    return run


def latency_ms(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], batch_size: int | None = None,
               compile: bool = False, budget_s: float = BUDGET_S) -> float:
    """Median milliseconds per forward pass at `batch_size` (default: the batch of `example_inputs`)."""
    batch_size = batch_size or example_inputs[0].shape[0]
    return latency_profile(model, example_inputs, [batch_size], compile, budget_s)[batch_size]


def latency_profile(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], batch_sizes: list[int],
                    compile: bool = False, budget_s: float = BUDGET_S) -> dict[int, float]:
    """{batch size: median ms} of one model."""
    return compare_latency({"model": model}, example_inputs, batch_sizes, compile, budget_s)["model"]


def compare_latency(models: dict[str, torch.nn.Module], example_inputs: tuple[torch.Tensor, ...],
                    batch_sizes: list[int], compile: bool = False,
                    budget_s: float = BUDGET_S) -> dict[str, dict[int, float]]:
    """{name: {batch size: median ms}} for several models timed in alternation (see `time_in_alternation`)."""
    timings = time_in_alternation(models, example_inputs, batch_sizes, compile, budget_s)
    return {name: {b: t.median_ms for b, t in per_batch.items()} for name, per_batch in timings.items()}


def time_in_alternation(models: dict[str, torch.nn.Module], example_inputs: tuple[torch.Tensor, ...],
                        batch_sizes: list[int], compile: bool = False,
                        budget_s: float = BUDGET_S) -> dict[str, dict[int, Timing]]:
    """{name: {batch size: Timing}}: at each batch size the models take turns, round after round, until every
    spread is under `SPREAD_TARGET` or `budget_s` (per batch size) is spent."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = torch.get_num_threads()
    with ExitStack() as stack:
        stack.enter_context(inductor_config.patch(COMPILE_SETTINGS))
        runners = {}
        for name, model in models.items():
            stack.enter_context(evaluating(model))
            as_it_is = not compile or getattr(model, "runs_without_torch_compile", False)
            runners[name] = model if as_it_is else compiled(model)
        result: dict[str, dict[int, Timing]] = {name: {} for name in models}
        for batch_size in batch_sizes:
            inputs = {name: tuple(t.to(device_of(model)) for t in inputs_at_batch(example_inputs, batch_size))
                      for name, model in models.items()}
            repeats = {name: _passes_per_round(runner, inputs[name]) for name, runner in runners.items()}

            def run_round() -> dict[str, float]:
                return {name: _median_ms(runner, inputs[name], repeats[name]) for name, runner in runners.items()}

            figures, busy = alternate(run_round, budget_s, sample_busy=lambda: other_processes_running(threads))
            busy_cpus = statistics.median(busy)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
            for name, values in figures.items():
                reliable, reason = verdict(values, busy_cpus, cpus, threads)
                result[name][batch_size] = Timing(statistics.median(values), spread(values), len(values), load,
                                                  busy_cpus, reliable, reason)
    return result


def _passes_per_round(runner, inputs: tuple[torch.Tensor, ...]) -> int:
    """Warm up (under torch.compile the first call at a shape compiles; skipped where it already ran) and size a
    round to last about ROUND_S (called inside `evaluating`: eval mode, no autograd). A model whose one pass
    already takes a round is not run three more times to find that out: on a large model each pass is seconds."""
    if (id(runner), _shapes(inputs)) not in _WARM:
        runner(*inputs)
        if any(runner is kept for _, kept in _COMPILED):  # a kept runner's id is not reused by another object
            _WARM.add((id(runner), _shapes(inputs)))
    compiles = _compiled_graphs()
    one_pass_s = _median_ms(runner, inputs, 1) / 1000
    # A pass that compiled says nothing of speed: a stage's torch.export resets torch.compile's caches, so a model
    # warm for an earlier stage compiles again.
    if one_pass_s < ROUND_S or _compiled_graphs() != compiles:
        one_pass_s = _median_ms(runner, inputs, 3) / 1000
    return max(1, min(1000, math.ceil(ROUND_S / max(one_pass_s, 1e-6))))


def _compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


def _shapes(inputs: tuple[torch.Tensor, ...]) -> tuple:
    return tuple((tuple(t.shape), t.dtype, t.device.type) for t in inputs)


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
