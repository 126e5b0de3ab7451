"""A deployable low-bit model in one safetensors file: bit-packed weights, their scales, and the graph.

File contents (safetensors tensors; `<w>` is a quantized weight's attribute name, e.g. `layer1.0.conv1.weight`):

- `<w>.codes`       uint8[ceil(n * bits / 8)]  integer weights, bit-packed (layout below);
- `<w>.scale`       bfloat16                   per-tensor 0-d, per-channel [out], per-group [out, groups]
                                               (the quantizer rounds its scales to bfloat16: stored exactly);
- `<w>.zero_point`  uint8, same shape as scale  zero point - qmin (like the codes), only for asymmetric weights
                                               (symmetric ones have zero point 0);
- `<w>.cast`        float8_e4m3fn / float8_e5m2 / float16 / bfloat16 in the weight's shape  (float formats; FP8
                    also has `<w>.scale`: float32[out], weight = cast * scale per output channel);
- `__graph__`       uint8[...]  zlib-compressed bytes of a `torch.export` `.pt2` of the whole model (activation
                    fake-quant included, dynamic batch) whose quantized weights were replaced by stride-0
                    placeholders, so they cost a few bytes each instead of 4 per element; every other tensor
                    (biases, layers left in float) is stored there normally. (The .pt2 zip stores its JSON graph
                    uncompressed; zlib shrinks it about tenfold, which matters for small models.)

The safetensors metadata holds `format` = "modelpress.packed", `version` = "1" and `manifest`: a JSON list with
one entry per quantized weight: {"attr", "shape", "dtype" ("int" or a float format), "bits", "qmin", "qmax",
"axis", "group_size"}, and "embedding": true for an embedding table (a weight only `aten.embedding` reads; int8 per
row is "axis" 0, 4-bit per group a "group_size" along the row).

Bit layout of `<w>.codes`: the weight is flattened in row-major (C) order into n codes. Each code is stored as the
unsigned value u = q - qmin in `bits` bits (0 <= u < 2^bits). Code i occupies bits [i*bits, (i+1)*bits) of one
little-endian bit stream, where stream bit k is bit (k mod 8) of byte k // 8 (bit 0 = least significant), and the
code's own least significant bit comes first. For 4 bits this is two codes per byte, code 2j in the low nibble of
byte j and code 2j+1 in the high nibble; for 2 bits four codes per byte from the low bits up; 3, 5, 6, 7 bits
straddle byte boundaries. The last byte is zero-padded.

Why a skeleton graph rather than rebuilding modules from a manifest: uploads are arbitrary `torch.export` programs,
not a zoo of known classes, so the graph itself is the only faithful description of the computation; shipping it
without its large weights keeps the file within a few percent of bits/32 of the fp32 size on real models and
makes `load_packed` return exactly the model that was evaluated.
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.decompress import inflate
from compression.archive.jsontext import parse_json
from compression.io import export_model, load_program_bytes
from compression.modes import eval_mode
from compression.quant.affine import QParams, dequantize
from compression.quant.weights import QuantizedWeight

FORMAT = "modelpress.packed"
VERSION = "1"
GRAPH_KEY = "__graph__"


def pack_codes(codes: torch.Tensor, bits: int, qmin: int) -> torch.Tensor:
    """Integer codes -> uint8 bit stream (layout in the module docstring)."""
    unsigned = (codes.reshape(-1).to(torch.int32) - qmin).numpy().astype(np.uint16)
    if unsigned.size and (unsigned.max() >= 1 << bits):
        raise ValueError(f"codes do not fit in {bits} bits")
    stream = ((unsigned[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(stream.reshape(-1), bitorder="little"))


def unpack_codes(packed: torch.Tensor, bits: int, qmin: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack_codes`: int32 codes in `shape`."""
    count = math.prod(shape)
    stream = np.unpackbits(packed.numpy(), bitorder="little")[:count * bits].reshape(count, bits)
    unsigned = stream.astype(np.int32) @ (1 << np.arange(bits, dtype=np.int32))
    return torch.from_numpy(unsigned + qmin).reshape(shape)


def _holder(model: torch.nn.Module, attr: str) -> tuple[torch.nn.Module, str]:
    owner, _, leaf = attr.rpartition(".")
    return (model.get_submodule(owner) if owner else model), leaf


def _skeleton_bytes(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], attrs: list[str]) -> bytes:
    skeleton = copy.deepcopy(model)
    for attr in attrs:
        holder, leaf = _holder(skeleton, attr)
        shape = getattr(holder, leaf).shape
        holder._parameters[leaf] = torch.nn.Parameter(torch.zeros(()).expand(shape), requires_grad=False)
    # The .pt2 keeps its sample inputs: two fresh rows, not views into a large calibration batch.
    example_inputs = tuple(tensor[:2].clone() for tensor in example_inputs)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch.export.save notes that a stride-0 tensor has no "complete" storage: that is the point here.
        warnings.simplefilter("ignore")
        torch.export.save(export_model(skeleton, example_inputs), buffer)
    return zlib.compress(buffer.getvalue(), 9)


def write_packed(path: str | Path, model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                 weights: dict[str, QuantizedWeight], lookup_tables: set[str] = frozenset()) -> Path:
    """Write `model` with the weights named in `weights` (attribute name -> quantized weight) packed; those in
    `lookup_tables` are embedding tables (marked so in the manifest)."""
    path = Path(path)
    tensors, manifest = {}, []
    for attr, weight in weights.items():
        fmt = weight.format
        entry = {"attr": attr, "shape": list(weight.dequantized.shape), "dtype": fmt.dtype, "bits": fmt.storage_bits}
        if fmt.dtype == "int":
            params = weight.qparams
            tensors[f"{attr}.codes"] = pack_codes(weight.codes, fmt.bits, params.qmin)
            tensors[f"{attr}.scale"] = params.scale.to(torch.bfloat16).contiguous()
            if bool((params.zero_point != 0).any()):
                tensors[f"{attr}.zero_point"] = (params.zero_point - params.qmin).to(torch.uint8).contiguous()
            entry.update(qmin=params.qmin, qmax=params.qmax, axis=params.axis, group_size=params.group_size)
        else:
            tensors[f"{attr}.cast"] = weight.cast.contiguous()
            if weight.scale is not None:
                tensors[f"{attr}.scale"] = weight.scale.float().contiguous()
        if attr in lookup_tables:
            entry["embedding"] = True
        manifest.append(entry)
    return save_with_graph(path, model, example_inputs, tensors, manifest, FORMAT, VERSION)


def _weight_from(entry: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    attr, shape = entry["attr"], tuple(entry["shape"])
    if entry["dtype"] == "int":
        scale = tensors[f"{attr}.scale"].float()
        stored_zero_point = tensors.get(f"{attr}.zero_point")
        zero_point = (torch.zeros_like(scale) if stored_zero_point is None
                      else stored_zero_point.float() + entry["qmin"])
        params = QParams(scale, zero_point, entry["qmin"], entry["qmax"], entry["axis"], entry["group_size"])
        return dequantize(unpack_codes(tensors[f"{attr}.codes"], entry["bits"], entry["qmin"], shape), params)
    weight = tensors[f"{attr}.cast"].float()
    if f"{attr}.scale" in tensors:
        weight = weight * tensors[f"{attr}.scale"].reshape(-1, *([1] * (len(shape) - 1)))
    return weight


def load_packed(path: str | Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> torch.nn.Module:
    """Rebuild the runnable model (eval mode) from a file written by `write_packed`."""
    model, tensors, manifest = open_with_graph(path, FORMAT, limits)
    for entry in manifest:
        set_weight(model, entry["attr"], _weight_from(entry, tensors))
    return eval_mode(model)


def save_with_graph(path: str | Path, model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                    tensors: dict[str, torch.Tensor], manifest: list[dict], file_format: str, version: str) -> Path:
    """Write `tensors` plus the weightless graph of `model` (every `manifest` entry's "attr" replaced by a
    placeholder) to one safetensors file; shared by the packed formats of this library."""
    path = Path(path)
    graph = _skeleton_bytes(model, example_inputs, [entry["attr"] for entry in manifest])
    tensors = {**tensors, GRAPH_KEY: torch.frombuffer(bytearray(graph), dtype=torch.uint8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": file_format, "version": version,
                                            "manifest": json.dumps(manifest)})
    return path


def open_with_graph(path: str | Path, file_format: str, limits: ArchiveLimits = DEFAULT_LIMITS
                    ) -> tuple[torch.nn.Module, dict[str, torch.Tensor], list[dict]]:
    """Read a file written by `save_with_graph`: the graph (weights still placeholders, loaded under every archive
    rule), tensors and manifest."""
    with safe_open(str(path), framework="pt") as archive:
        metadata = archive.metadata() or {}
        if metadata.get("format") != file_format:
            raise ValueError(f"{path} is not a {file_format} file")
        tensors = {key: archive.get_tensor(key) for key in archive.keys()}
    graph = inflate(tensors.pop(GRAPH_KEY).numpy().tobytes(), limits.max_member_bytes, f"{path}: {GRAPH_KEY}")
    manifest = parse_json(metadata.get("manifest", ""), f"{path}: manifest", limits, list)
    return load_program_bytes(graph, limits).module(), tensors, manifest


def set_weight(model: torch.nn.Module, attr: str, weight: torch.Tensor) -> None:
    holder, leaf = _holder(model, attr)
    holder._parameters[leaf] = torch.nn.Parameter(weight, requires_grad=False)
