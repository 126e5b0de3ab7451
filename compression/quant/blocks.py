"""Layers grouped into the blocks a transformer is made of, for block-level sensitivity.

Single-layer sensitivity misses what matters in a transformer: the error of an attention block (query, key,
value and output projections together, through the softmax) or an MLP block is not the sum of its layers'. Blocks
are found from the layer names every common implementation uses: below the last numeric path segment (the block
index: `encoder.layer.3`, `transformer.h.3`, `model.layers.3`), a segment containing "att" makes it attention
(`attention`, `attn`, `self_attn`), one of `MLP_SEGMENTS` the MLP (BERT splits its MLP into `intermediate` and
`output` under the block index; `attention.output` stays attention). Any other layer belongs to its parent
module (a ResNet stage `layer1.0`), so CNNs get per-residual-block groups.
"""

from __future__ import annotations

from typing import Callable

from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat

MLP_SEGMENTS = {"mlp", "ffn", "feed_forward", "feedforward", "intermediate", "output", "fc1", "fc2"}


def block_of(layer: str) -> tuple[str, str]:
    """(block name, kind) of a layer name, kind "attention", "mlp" or "module"."""
    parts = layer.split(".")
    numeric = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
    if numeric:
        index = numeric[-1]
        below, prefix = parts[index + 1:], ".".join(parts[:index + 1])
        if any("att" in part.lower() for part in below):
            return f"{prefix}.attention", "attention"
        if below and below[0].lower() in MLP_SEGMENTS:
            return f"{prefix}.mlp", "mlp"
    parent = ".".join(parts[:-1])
    return parent or layer, "module"


def block_groups(layers: list[str]) -> dict[str, tuple[str, list[str]]]:
    """{block name: (kind, its layers in order)} for `layers`, in order of first appearance."""
    groups: dict[str, tuple[str, list[str]]] = {}
    for layer in layers:
        name, kind = block_of(layer)
        groups.setdefault(name, (kind, []))[1].append(layer)
    return groups


def block_sensitivity(sim: QuantSimulation, config: dict[str, WeightFormat | None],
                      evaluate: Callable[[object], float], float_metric: float,
                      progress: Callable[[int, int], None] = lambda step, total: None) -> list[dict]:
    """Metric drop (points) with only one block quantized, for every block with a quantized layer; worst first."""
    quantized = [name for name, fmt in config.items() if fmt is not None]
    groups = block_groups(quantized)
    rows = []
    for step, (block, (kind, layers)) in enumerate(groups.items(), 1):
        with sim.configured({name: config[name] for name in layers}) as model:
            drop = float_metric - evaluate(model)
        rows.append({"name": block, "kind": kind, "layers": layers, "sensitivity": round(drop, 2)})
        progress(step, len(groups))
    return sorted(rows, key=lambda row: -row["sensitivity"])
