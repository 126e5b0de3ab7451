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

import math
from pathlib import Path

import torch

from compression.modes import eval_mode
from compression.quant.packed import open_with_graph, pack_codes, save_with_graph, set_weight, unpack_codes

FORMAT = "modelpress.codebook"
VERSION = "1"


def payload_bytes(shape: tuple[int, ...], bits: int) -> int:
    """Bytes one quantized tensor takes in the file: packed indices plus its float32 codebook."""
    return math.ceil(math.prod(shape) * bits / 8) + 4 * 2**bits


def write_codebook_model(path: str | Path, model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                         encoded: dict[str, tuple[torch.Tensor, torch.Tensor, int]]) -> Path:
    """Write `model` with the weights in `encoded` (attr -> (indices, codebook, bits)) stored as codebook indices."""
    tensors, manifest = {}, []
    for attr, (indices, codebook, bits) in encoded.items():
        tensors[f"{attr}.codes"] = pack_codes(indices.cpu(), bits, 0)
        tensors[f"{attr}.codebook"] = codebook.detach().float().cpu().contiguous()
        manifest.append({"attr": attr, "shape": list(indices.shape), "bits": bits})
    return save_with_graph(path, model, example_inputs, tensors, manifest, FORMAT, VERSION)


def load_codebook_model(path: str | Path) -> torch.nn.Module:
    """Rebuild the runnable model (eval mode) from a file written by `write_codebook_model`."""
    model, tensors, manifest = open_with_graph(path, FORMAT)
    for entry in manifest:
        attr, shape = entry["attr"], tuple(entry["shape"])
        indices = unpack_codes(tensors[f"{attr}.codes"], entry["bits"], 0, shape).long()
        set_weight(model, attr, tensors[f"{attr}.codebook"][indices])
    return eval_mode(model)
