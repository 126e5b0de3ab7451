"""Which layers cost accuracy, and how to buy it back.

- weight SQNR (dB) of each quantized layer;
- output SQNR (dB) of each layer in the quantized model against the float model on calibration data (errors of
  earlier layers included: it shows where the error builds up);
- sensitivity: metric drop (points) when only that layer is quantized;
- the accuracy budget: promote the most sensitive layers one step at a time (target bits -> 8 bits -> float)
  until the drop is within budget, keeping the best configuration seen if the budget cannot be met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from compression.quant.affine import sqnr_db
from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat

Config = dict[str, WeightFormat | None]


def _finite(value: float) -> float | None:
    """JSON has no infinity: an exact (noise-free) result is reported as null."""
    return round(value, 2) if math.isfinite(value) else None


def weight_sqnr(sim: QuantSimulation, config: Config) -> dict[str, float]:
    return {name: sqnr_db(sim.float_weights[name], sim.quantized(name, fmt).dequantized)
            for name, fmt in config.items() if fmt is not None}


# The layer outputs output SQNR holds at once (every layer's, float and quantized, for a slice of a batch): a
# ResNet-50 at 512x512 keeps about 220 MB per image, and a whole calibration batch of 48 such images needed 21 GB
# (DETR-ResNet-50's weight-only PTQ was killed for memory).
OUTPUT_SQNR_BYTES = 1 << 30


def output_sqnr(sim: QuantSimulation, config: Config, batches: Iterable[tuple[torch.Tensor, ...]],
                max_bytes: int = OUTPUT_SQNR_BYTES) -> dict[str, float]:
    """Each quantized layer's output SQNR over `batches`, run in slices of as many examples as keep the layer
    outputs under `max_bytes` (measured on the first example). A layer whose output has another shape quantized
    (an expert's rows, where quantization moved the router's choices: JetMoE) has no figure (None in the report)."""
    signal = {name: 0.0 for name in sim.layers}
    noise = {name: 0.0 for name in sim.layers}
    rerouted: set[str] = set()
    rows = None
    for tap in sim.taps.values():
        tap.keep = True
    try:
        with torch.no_grad():
            for batch in batches:
                start = 0
                while start < len(batch[0]):
                    step = rows or 1
                    inputs = tuple(tensor[start:start + step] for tensor in batch)
                    start += step
                    float_out, quant_out = (_layer_outputs(sim, current, inputs) for current in ({}, config))
                    if rows is None:  # both passes' outputs of one example: how many fit in max_bytes
                        kept = sum(t.numel() * t.element_size() for t in (*float_out.values(), *quant_out.values()))
                        rows = max(1, max_bytes // max(kept, 1))
                    for name in sim.layers:
                        if float_out[name].shape != quant_out[name].shape:
                            rerouted.add(name)
                            continue
                        reference = float_out[name].double()
                        signal[name] += float(reference.pow(2).sum())
                        noise[name] += float((reference - quant_out[name].double()).pow(2).sum())
                    del float_out, quant_out
    finally:
        for tap in sim.taps.values():
            tap.keep = False
            tap.kept.clear()
    return {name: (math.inf if noise[name] == 0 else 10 * math.log10(signal[name] / noise[name]))
            for name, fmt in config.items() if fmt is not None and name not in rerouted}


def _layer_outputs(sim: QuantSimulation, config: Config, inputs: tuple[torch.Tensor, ...]) -> dict:
    with sim.configured(config):
        for tap in sim.taps.values():
            tap.kept.clear()
        sim.gm(*inputs)
        return {name: tap.kept[0] for name, tap in sim.taps.items()}


def sensitivity(sim: QuantSimulation, config: Config, evaluate: Callable[[torch.nn.Module], float],
                float_metric: float, progress: Callable[[int, int], None] = lambda step, total: None
                ) -> dict[str, float]:
    """Metric drop (points) with only one layer quantized, for every layer `config` quantizes."""
    drops = {}
    quantized = [name for name, fmt in config.items() if fmt is not None]
    for step, name in enumerate(quantized, 1):
        with sim.configured({name: config[name]}) as model:
            drops[name] = float_metric - evaluate(model)
        progress(step, len(quantized))
    return drops


@dataclass
class BudgetSearch:
    """Outcome of the accuracy-budget search, reported as is in the metrics."""

    config: Config
    metric: float
    budget_met: bool
    steps: list[dict] = field(default_factory=list)


def _promotions(fmt: WeightFormat | None, allow_float: bool) -> list[WeightFormat | None]:
    """Higher-precision choices for a layer, in the order tried."""
    if fmt is None:
        return []
    ladder = [fmt.with_bits(8)] if fmt.dtype == "int" and fmt.bits < 8 else []
    return ladder + ([None] if allow_float else [])


def meet_budget(sim: QuantSimulation, config: Config, evaluate: Callable[[torch.nn.Module], float],
                float_metric: float, max_drop: float, order: list[str], allow_float: bool,
                progress: Callable[[int, int], None] = lambda step, total: None) -> BudgetSearch:
    """Greedy: promote layers in `order` (most sensitive first) one precision step at a time until the metric
    is within `max_drop` of float; return the first configuration that is, else the best one seen."""
    current = dict(config)
    with sim.configured(current) as model:
        metric = evaluate(model)
    best = BudgetSearch(dict(current), metric, float_metric - metric <= max_drop)
    best.steps.append({"changed": None, "metric": round(metric, 2)})
    queue = [(name, step) for name in order for step in _promotions(config[name], allow_float)]
    for index, (name, promoted) in enumerate(queue, 1):
        if best.budget_met:
            break
        current[name] = promoted
        with sim.configured(current) as model:
            metric = evaluate(model)
        best.steps.append({"changed": name, "to": describe(promoted), "metric": round(metric, 2)})
        if metric > best.metric or float_metric - metric <= max_drop:
            best.config, best.metric = dict(current), metric
            best.budget_met = float_metric - metric <= max_drop
        progress(index, len(queue))
    return best


def describe(fmt: WeightFormat | None) -> str:
    return "float" if fmt is None else fmt.describe()


def layer_report(sim: QuantSimulation, config: Config, weight_db: dict[str, float], output_db: dict[str, float],
                 drops: dict[str, float] | None, requested: Config) -> list[dict]:
    """One row per layer, worst first: by sensitivity when measured, else by output SQNR.

    `format` is what the layer ended up with; `requested` is the format asked for, at which its sensitivity
    was measured (they differ where the accuracy budget promoted the layer).
    """
    rows = []
    for index, name in enumerate(sim.layers):
        fmt = config.get(name)
        rows.append({"name": name, "index": index, "format": describe(fmt), "requested": describe(requested[name]),
                     "bits": None if fmt is None else fmt.storage_bits,
                     "weight_sqnr_db": _finite(weight_db[name]) if name in weight_db else None,
                     "output_sqnr_db": _finite(output_db[name]) if name in output_db else None,
                     "sensitivity": round(drops[name], 2) if drops and name in drops else None})
    if drops:
        rows.sort(key=lambda row: -(row["sensitivity"] if row["sensitivity"] is not None else -math.inf))
    else:
        rows.sort(key=lambda row: row["output_sqnr_db"] if row["output_sqnr_db"] is not None else math.inf)
    return rows
