"""Embedding tables stored as integers inside the exported graph, dequantized only for the rows looked up.

The x86 quantizer leaves `aten.embedding` in fp32, so an encoder's word-embedding table (often a third to a half
of its parameters) kept the int8 file at 1.5x smaller than fp32. Each table is rewritten in the graph:

- int8 (default): `codes` int8 [V, D], symmetric per row (`scale` fp32 [V, 1] = max|row| / 127);
  `out = embedding(codes, ids).float() * embedding(scale, ids)`.
- 4-bit per group: `codes` uint8 [V, D/2], two codes per byte (code 2j in the low nibble, 2j+1 in the high one,
  the layout of `compression.quant.packed`), each the signed code + 8 (0..15); `scale` fp32 [V, D/group] =
  max|group| / 7; `out = ((unpack(embedding(codes, ids)) - 8) * embedding(scale, ids)[..., None]).flatten`.

Only plain aten ops are used, so the program loads in a fresh process without any quantization library and
`torch.compile` fuses the gather and the dequantization; only looked-up rows are ever dequantized.

A table tied to an output layer (GPT-2, Llama 3.2, Qwen2.5, Gemma: the logits are `linear(h, table)`) is also that
layer's weight, which int8 PTQ has already stored as int8 codes with one symmetric scale per output channel: per
row of the table, the int8 grid above. Its lookups read those codes and scales, so the table is stored once (GPT-2
small's 38.6 M-entry table was stored twice before, the file 3.2x smaller than fp32 instead of 4.2x). Under the
4-bit format too: a 4-bit copy beside the layer's int8 codes would add half a byte per entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx

from compression.ptq.graph_rewrites import register_codes

aten = torch.ops.aten


@dataclass(frozen=True)
class EmbeddingFormat:
    bits: int = 8  # 8: per row; 4: per group
    group_size: int = 32

    def describe(self) -> str:
        if self.bits == 8:
            return "int8 symmetric, per row"
        return f"int4 symmetric, per group of {self.group_size}, two codes per byte"


SHARED_FORMAT = EmbeddingFormat(bits=8)  # a table read from its tied output layer's int8 codes
MIN_GROUP = 8  # the smallest group a 4-bit table is fitted to (EmbeddingQuantSpec's own minimum)


def lookup_tables(gm: fx.GraphModule) -> tuple[dict[str, list[fx.Node]], dict[str, str]]:
    """The float 2-d tables of `gm` that only `aten.embedding` reads: ({table attribute: its lookups}, {table kept
    whole: why}). A table shared with an output projection (tied weights) is kept whole: storing it twice would
    grow the file."""
    skipped, lookups = {}, {}
    readers: dict[str, set] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers.setdefault(node.target, set()).update(user.target for user in node.users)
        if node.op == "call_function" and node.target == aten.embedding.default:
            table = node.args[0]
            if isinstance(table, fx.Node) and table.op == "get_attr":
                lookups.setdefault(table.target, []).append(node)
    for attr in list(lookups):
        weight = _get(gm, attr)
        others = readers[attr] - {aten.embedding.default}
        if not weight.is_floating_point() or weight.dim() != 2:
            del lookups[attr]
        elif others:
            skipped[attr] = f"also read by {sorted(str(op) for op in others)} (tied weights)"
            del lookups[attr]
    return lookups, skipped


def quantize_embeddings(gm: fx.GraphModule, fmt: EmbeddingFormat) -> dict:
    """Rewrite every `aten.embedding` on a float table of `gm` (in place) to read an integer table.

    Returns the report for the metrics: {"format", "tables": quantized table attributes, "kept_float": {table:
    why}, "group_sizes": {table: group} for 4-bit tables whose width `fmt`'s group does not divide (`_fitted`),
    and "shared_with_output_layer": the tables stored as a tied output layer's int8 weight, if any (in int8 under a
    4-bit `fmt` too)}."""
    quantized, shared_tables, fitted = [], [], {}
    lookups, skipped = lookup_tables(gm)
    for attr, nodes in lookups.items():
        weight = _get(gm, attr)
        shared = _output_layer_codes(gm, weight)
        table_fmt = fmt
        if shared is None and fmt.bits == 4 and weight.shape[1] % fmt.group_size:
            table_fmt = _fitted(fmt, weight.shape[1])
            if table_fmt is None:
                skipped[attr] = (f"width {weight.shape[1]} is not a multiple of group_size {fmt.group_size} nor of "
                                 f"any smaller group of {MIN_GROUP} or more")
                continue
            fitted[attr] = table_fmt.group_size
        if shared is not None:  # in int8 whatever `fmt`: sharing costs nothing, a 4-bit copy half a byte an entry
            codes_attr, scale_attr = _share(gm, attr, *shared)
            shared_tables.append(attr)
        else:
            codes_attr, scale_attr = _register(gm, attr, weight.detach(), table_fmt)
        for node in nodes:
            _rewrite_lookup(gm, node, codes_attr, scale_attr, SHARED_FORMAT if shared is not None else table_fmt)
        gm.graph.eliminate_dead_code()
        owner, _, leaf = attr.rpartition(".")
        delattr(gm.get_submodule(owner) if owner else gm, leaf)
        quantized.append(attr)
    gm.recompile()
    report = {"format": fmt.describe(), "tables": quantized, "kept_float": skipped}
    if fitted:
        report["group_sizes"] = fitted
    if shared_tables:
        report["shared_with_output_layer"] = shared_tables
    return report


def _fitted(fmt: EmbeddingFormat, width: int) -> EmbeddingFormat | None:
    """`fmt` with the largest group size below its own that divides `width` (an even one, as two codes share a
    byte), at least MIN_GROUP; None if there is none. A group size that does not divide the rows kept the whole
    table float before, reported only under kept_float."""
    size = next((size for size in range(fmt.group_size - 1, MIN_GROUP - 1, -1) if width % size == 0 and size % 2 == 0),
                None)
    return None if size is None else EmbeddingFormat(fmt.bits, size)


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    return torch.round(weight / scale).clamp(-127, 127).to(torch.int8), scale.float()


def quantize_groups_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows, width = weight.shape
    groups = weight.reshape(rows, width // group_size, group_size)
    scale = groups.abs().amax(dim=2).clamp(min=1e-12) / 7
    codes = (torch.round(groups / scale[..., None]).clamp(-8, 7) + 8).to(torch.uint8).reshape(rows, width)
    return codes[:, 0::2] | (codes[:, 1::2] << 4), scale.float()


def _register(gm: fx.GraphModule, attr: str, weight: torch.Tensor, fmt: EmbeddingFormat) -> tuple[str, str]:
    codes, scale = (quantize_rows_int8(weight) if fmt.bits == 8 else quantize_groups_int4(weight, fmt.group_size))
    return register_codes(gm, attr, codes, scale)


def _output_layer_codes(gm: fx.GraphModule, table: torch.Tensor) -> tuple[fx.Node, torch.Tensor] | None:
    """(the get_attr of int8 codes, their per-row scales [V, 1]) of a linear weight that int8 PTQ quantized from
    `table` itself: a per-channel dequantization on axis 0 with zero points 0 whose values are `table` rounded to
    its grid, i.e. within half a step of every entry. None when no layer's weight is the table (untied models, or
    a weight SmoothQuant scaled)."""
    for node in gm.graph.nodes:
        # matched by name: the quantized_decomposed operators exist only once torchao (or torch.ao) is imported
        if node.op != "call_function" or "dequantize_per_channel" not in str(node.target):
            continue
        codes, scale, zero, axis = node.args[:4]
        if axis != 0 or not all(isinstance(arg, fx.Node) and arg.op == "get_attr" for arg in (codes, scale, zero)):
            continue
        values, zero_points = _get(gm, codes.target), _get(gm, zero.target)
        if values.dtype != torch.int8 or values.shape != table.shape or bool(zero_points.ne(0).any()):
            continue
        step = _get(gm, scale.target).float().reshape(-1, 1)
        if _on_grid(values, step, table):
            return codes, step
    return None


ROWS_PER_CHECK = 4096  # a 128k x 4096 table compared at once would take three 2 GiB temporaries


@torch.no_grad()
def _on_grid(codes: torch.Tensor, step: torch.Tensor, table: torch.Tensor) -> bool:
    """Whether codes x step is `table` rounded to that grid: every entry within half a step."""
    for start in range(0, len(table), ROWS_PER_CHECK):
        rows = slice(start, start + ROWS_PER_CHECK)
        if not bool(((codes[rows].float() * step[rows] - table[rows]).abs() <= step[rows] * 0.5001 + 1e-12).all()):
            return False
    return True


def _share(gm: fx.GraphModule, attr: str, codes: fx.Node, step: torch.Tensor) -> tuple[str, str]:
    """Move the output layer's int8 codes to the table's `_codes` name (its dequantization reads them there too)
    and register the table's per-row `_scale`: one tensor serves both, under the table's names (the ones the
    folder writer reads, `compression.hf_folder_export`)."""
    values = _get(gm, codes.target)
    owner, _, leaf = attr.rpartition(".")
    holder = gm.get_submodule(owner) if owner else gm
    holder.register_buffer(f"{leaf}_codes", values)
    holder.register_buffer(f"{leaf}_scale", step.contiguous())
    prefix = f"{owner}." if owner else ""
    old = codes.target
    for node in gm.graph.find_nodes(op="get_attr", target=old):
        node.target = f"{prefix}{leaf}_codes"
    old_owner, _, old_leaf = old.rpartition(".")
    delattr(gm.get_submodule(old_owner) if old_owner else gm, old_leaf)
    return f"{prefix}{leaf}_codes", f"{prefix}{leaf}_scale"


def _rewrite_lookup(gm: fx.GraphModule, lookup: fx.Node, codes_attr: str, scale_attr: str,
                    fmt: EmbeddingFormat) -> None:
    graph, ids = gm.graph, lookup.args[1]
    with graph.inserting_before(lookup):
        codes = graph.call_function(aten.embedding.default, (graph.get_attr(codes_attr), ids))
        scale = graph.call_function(aten.embedding.default, (graph.get_attr(scale_attr), ids))
        if fmt.bits == 8:
            values = graph.call_function(aten._to_copy.default, (codes,), {"dtype": torch.float32})
            out = graph.call_function(aten.mul.Tensor, (values, scale))
        else:
            low = graph.call_function(aten.bitwise_and.Scalar, (codes, 15))
            high = graph.call_function(aten.bitwise_right_shift.Tensor_Scalar, (codes, 4))
            pairs = graph.call_function(aten.stack.default, ([low, high], -1))
            flat = graph.call_function(aten.flatten.using_ints, (pairs, -2, -1))
            values = graph.call_function(aten._to_copy.default, (flat,), {"dtype": torch.float32})
            centred = graph.call_function(aten.sub.Tensor, (values, 8.0))
            grouped = graph.call_function(aten.unflatten.int, (centred, -1, [-1, fmt.group_size]))
            scaled = graph.call_function(aten.mul.Tensor,
                                         (grouped, graph.call_function(aten.unsqueeze.default, (scale, -1))))
            out = graph.call_function(aten.flatten.using_ints, (scaled, -2, -1))
    lookup.replace_all_uses_with(out)
    graph.erase_node(lookup)


def _get(gm: fx.GraphModule, attr: str) -> torch.Tensor:
    owner, _, leaf = attr.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)
