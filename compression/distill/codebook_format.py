"""A model whose weights are indices into per-tensor codebooks (differentiable quantization), in one safetensors file.

File contents (`<w>` is a quantized weight's attribute name, e.g. `layer1.0.conv1.weight`):

- `<w>.codes`     uint8[ceil(n * bits / 8)]  the index of every weight into its codebook, bit-packed;
- `<w>.codebook`  float32[2^bits]            the learned points, ascending; weight = codebook[index];
- `__graph__`     uint8[...]                 zlib-compressed `.pt2` of the whole model (dynamic batch) with the
                                             quantized weights replaced by stride-0 placeholders (a few bytes
                                             each); every other tensor (biases, batch norm, skipped layers) lives
                                             there at full precision.

Bit layout of `<w>.codes` is the one of `compression.quant.packed` with qmin = 0: the weight is flattened in
row-major order; index i occupies bits [i*bits, (i+1)*bits) of a little-endian bit stream (stream bit k is bit
k mod 8 of byte k // 8, least significant first; the index's own least significant bit comes first); the last byte
is zero-padded. So a tensor of n weights costs ceil(n * bits / 8) + 4 * 2^bits bytes.

The safetensors metadata holds `format` = "modelpress.codebook", `version` = "1" and `manifest`: a JSON list of
{"attr", "shape", "bits"} per quantized weight.
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings
import zlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from compression.io import export_model
from compression.modes import eval_mode
from compression.quant.packed import pack_codes, unpack_codes

FORMAT = "modelpress.codebook"
VERSION = "1"
GRAPH_KEY = "__graph__"


def _holder(model: torch.nn.Module, attr: str) -> tuple[torch.nn.Module, str]:
    owner, _, leaf = attr.rpartition(".")
    return (model.get_submodule(owner) if owner else model), leaf


def _skeleton_bytes(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], attrs: list[str]) -> bytes:
    """The model as a compressed `.pt2` whose weights `attrs` are stride-0 placeholders of the right shape."""
    skeleton = copy.deepcopy(model)
    for attr in attrs:
        holder, leaf = _holder(skeleton, attr)
        shape = getattr(holder, leaf).shape
        holder._parameters[leaf] = torch.nn.Parameter(torch.zeros(()).expand(shape), requires_grad=False)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch.export.save notes that a stride-0 tensor has no "complete" storage: that is the point here.
        warnings.simplefilter("ignore")
        torch.export.save(export_model(skeleton, tuple(t[:2].clone() for t in example_inputs)), buffer)
    return zlib.compress(buffer.getvalue(), 9)


def payload_bytes(shape: tuple[int, ...], bits: int) -> int:
    """Bytes one quantized tensor takes in the file: packed indices plus its float32 codebook."""
    return math.ceil(math.prod(shape) * bits / 8) + 4 * 2**bits


def write_codebook_model(path: str | Path, model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                         encoded: dict[str, tuple[torch.Tensor, torch.Tensor, int]]) -> Path:
    """Write `model` with the weights in `encoded` (attr -> (indices, codebook, bits)) stored as codebook indices."""
    path = Path(path)
    tensors, manifest = {}, []
    for attr, (indices, codebook, bits) in encoded.items():
        tensors[f"{attr}.codes"] = pack_codes(indices.cpu(), bits, 0)
        tensors[f"{attr}.codebook"] = codebook.detach().float().cpu().contiguous()
        manifest.append({"attr": attr, "shape": list(indices.shape), "bits": bits})
    graph = _skeleton_bytes(model, example_inputs, list(encoded))
    tensors[GRAPH_KEY] = torch.frombuffer(bytearray(graph), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": VERSION, "manifest": json.dumps(manifest)})
    return path


def load_codebook_model(path: str | Path) -> torch.nn.Module:
    """Rebuild the runnable model (eval mode) from a file written by `write_codebook_model`."""
    with safe_open(str(path), framework="pt") as archive:
        metadata = archive.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        tensors = {key: archive.get_tensor(key) for key in archive.keys()}
    graph = zlib.decompress(tensors.pop(GRAPH_KEY).numpy().tobytes())
    model = torch.export.load(io.BytesIO(graph)).module()
    for entry in json.loads(metadata["manifest"]):
        attr, shape = entry["attr"], tuple(entry["shape"])
        indices = unpack_codes(tensors[f"{attr}.codes"], entry["bits"], 0, shape).long()
        holder, leaf = _holder(model, attr)
        holder._parameters[leaf] = torch.nn.Parameter(tensors[f"{attr}.codebook"][indices], requires_grad=False)
    return eval_mode(model)
