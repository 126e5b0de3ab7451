"""Embedding tables on the general PTQ path: the tables that only `aten.embedding` reads are quantized like a
weight (`compression.quant.weights`) and packed beside the layers' weights, on the grids of the default path's
tables (`compression.ptq.embeddings`): int8 symmetric per row, or 4-bit symmetric per group of a row.

Why: an encoder's word-embedding table is often half its parameters; left in fp32 it kept weight-only int8 at
1.7x smaller than fp32 where the default int8 path, which quantizes it, is 3.9x (issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx

from compression.ptq.embeddings import EmbeddingFormat, lookup_tables
from compression.quant.graph import get_tensor
from compression.quant.weights import QuantizedWeight, WeightFormat, quantize_weight


@dataclass
class EmbeddingTables:
    format: EmbeddingFormat | None  # None: the spec keeps tables in fp32
    quantized: dict[str, QuantizedWeight] = field(default_factory=dict)  # table attribute -> its quantization
    kept_float: dict[str, str] = field(default_factory=dict)  # table attribute -> why it stays fp32

    def report(self, written: bool) -> dict:
        """The metrics' `embeddings` (as the default path reports it); `written`: the tables are in the file (a
        configuration without any quantized layer keeps them float too)."""
        kept = dict(self.kept_float)
        if not written:
            kept |= {attr: "no layer is quantized" for attr in self.quantized}
        return {"format": self.storage if written else "fp32", "tables": list(self.quantized) if written else [],
                "kept_float": kept}

    @property
    def storage(self) -> str:
        """What the artifacts' metadata says of the tables."""
        return self.format.describe() if self.format and self.quantized else "fp32"


def weight_format(fmt: EmbeddingFormat) -> WeightFormat:
    """A table's rows are its output channels: per row is per channel, groups run along a row."""
    if fmt.bits == 8:
        return WeightFormat("int", 8, symmetric=True, granularity="per_channel")
    return WeightFormat("int", fmt.bits, symmetric=True, granularity="per_group", group_size=fmt.group_size)


def quantize_tables(gm: fx.GraphModule, spec, layer_weights: dict[str, str] | None = None) -> EmbeddingTables:
    """Quantize every lookup-only float table of `gm` to the `embeddings` spec (an `EmbeddingQuantSpec`, or None
    for fp32); `gm` itself is not changed. `layer_weights` (weight attribute -> layer name) names the layers a
    tied table is stored as."""
    lookups, kept_float = lookup_tables(gm)
    for attr, layer in (layer_weights or {}).items():
        if attr in kept_float:  # tied to an output projection: it is that layer's weight, in that layer's format
            kept_float[attr] = f"tied to layer '{layer}': stored as that layer's weight"
    if spec is None:
        return EmbeddingTables(None, {}, kept_float | {attr: "embeddings: null" for attr in lookups})
    fmt = EmbeddingFormat(spec.bits, spec.group_size)
    quantized = {attr: quantize_weight(get_tensor(gm, attr), weight_format(fmt)) for attr in lookups}
    return EmbeddingTables(fmt, quantized, kept_float)
