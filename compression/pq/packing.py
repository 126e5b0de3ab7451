"""The packed iPQ artifact: one safetensors file that `load_ipq` turns back into a runnable module.

Layout (all tensors little-endian, safetensors header first):

- `<weight name>.indices` uint8: the codeword index of every block (see `compression.pq.layers` for block order)
  at b = ceil(log2 K) bits each, as one bit stream: index j occupies stream bits [j*b, (j+1)*b), least significant
  bit first, and stream bit i is bit (i mod 8) of byte i // 8 (LSB first); the last byte is zero-padded.
- `<weight name>.centroids` (K, block_size): float16, or int8 codes with `<weight name>.scale` float32 (1,) so that
  centroid = code * scale (symmetric, codes in -127..127): "iPQ + int8".
- `<name>` for every other parameter and buffer: float16 or float32 (floating tensors, per `dense_dtype`), integer
  tensors as they are.
- `__graph__` uint8: an xz (lzma) compressed `torch.export` archive of the model whose parameters and buffers are
  all stride-0 placeholders, i.e. the architecture only. Exported with a dynamic batch dimension.
- header metadata: `format` = "modelpress.ipq", `version` = "1", `manifest` = JSON {"layers": {weight name:
  {"shape", "block_size", "centroids", "bits", "num_blocks", "centroid_dtype"}}, "dense": {name: torch dtype}}.

The file size is the artifact's size; `theoretical_bytes` gives indices + centroids + dense tensors, so the
difference is the header and the compressed graph.
"""

from __future__ import annotations

import copy
import io
import json
import lzma
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize

from compression.io import export_model, inputs_at_batch
from compression.modes import eval_mode, is_training
from compression.pq.parametrizations import PQWeight, int8_codes, parametrizations_of, set_noise

FORMAT = "modelpress.ipq"
VERSION = "1"
GRAPH_KEY = "__graph__"
_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def index_bits(num_centroids: int) -> int:
    return max(1, math.ceil(math.log2(num_centroids)))


def pack_indices(indices: Tensor, bits: int) -> Tensor:
    values = indices.detach().cpu().numpy().astype(np.uint16)
    if values.size and int(values.max()) >= 1 << bits:
        raise ValueError(f"an index does not fit in {bits} bits")
    stream = ((values[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8).reshape(-1)
    return torch.from_numpy(np.packbits(stream, bitorder="little"))


def unpack_indices(packed: Tensor, bits: int, count: int) -> Tensor:
    stream = np.unpackbits(packed.numpy(), bitorder="little")[:count * bits].reshape(count, bits)
    return torch.from_numpy((stream.astype(np.int64) << np.arange(bits)).sum(1))


def save_ipq(model: nn.Module, example_inputs: tuple[Tensor, ...], path: str | Path,
             dense_dtype: str = "float16") -> dict:
    """Write `model` (with PQWeight parametrizations) to `path`; returns the manifest."""
    codebooks = parametrizations_of(model, PQWeight)
    tensors: dict[str, Tensor] = {}
    layers = {}
    for name, pq in codebooks.items():
        bits = index_bits(pq.centroids.shape[0])
        tensors[f"{name}.indices"] = pack_indices(pq.assignments, bits)
        centroids = pq.centroids.detach().float().cpu()
        if pq.centroid_dtype == "int8":
            codes, scale = int8_codes(centroids)
            tensors[f"{name}.centroids"] = codes.to(torch.int8)
            tensors[f"{name}.scale"] = scale.reshape(1)
        else:
            tensors[f"{name}.centroids"] = centroids.half()
        layers[name] = {"shape": list(pq.shape), "block_size": pq.block_size, "centroids": pq.centroids.shape[0],
                        "bits": bits, "num_blocks": len(pq.assignments),
                        "centroid_dtype": pq.centroid_dtype}
    program = _export_dense(model, example_inputs)
    dense = {}
    for name, value in program.state_dict.items():
        if name in layers:
            continue
        value = value.detach().cpu()
        dense[name] = str(value.dtype).removeprefix("torch.")
        tensors[name] = value.to(_DTYPES[dense_dtype]) if value.is_floating_point() else value.contiguous()
    tensors[GRAPH_KEY] = torch.frombuffer(bytearray(_architecture_bytes(program)), dtype=torch.uint8)
    manifest = {"layers": layers, "dense": dense}
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": VERSION, "manifest": json.dumps(manifest)})
    return manifest


def load_ipq(path: str | Path) -> nn.Module:
    """Rebuild a runnable module (an exported GraphModule in eval mode) from a packed iPQ file."""
    with safe_open(str(path), framework="pt") as packed:
        metadata = packed.metadata() or {}
        if metadata.get("format") != FORMAT or metadata.get("version") != VERSION:
            raise ValueError(f"{path} is not a {FORMAT} v{VERSION} file")
        tensors = {key: packed.get_tensor(key) for key in packed.keys()}
    manifest = json.loads(metadata["manifest"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the stride-0 placeholders are not complete tensors
        module = torch.export.load(io.BytesIO(lzma.decompress(tensors[GRAPH_KEY].numpy().tobytes()))).module()
    for name, layer in manifest["layers"].items():
        _replace(module, name, decode_weight(tensors, name, layer))
    for name, dtype in manifest["dense"].items():
        _replace(module, name, tensors[name].to(getattr(torch, dtype)))
    return module


def decode_weight(tensors: dict[str, Tensor], name: str, layer: dict) -> Tensor:
    indices = unpack_indices(tensors[f"{name}.indices"], layer["bits"], layer["num_blocks"])
    centroids = tensors[f"{name}.centroids"].float()
    if layer["centroid_dtype"] == "int8":
        centroids = centroids * tensors[f"{name}.scale"]
    return centroids[indices].reshape(layer["shape"])


def theoretical_bytes(manifest: dict) -> int:
    """Indices at log2(K) bits, centroids and dense tensors: what the file holds besides header and graph."""
    total = 0
    for layer in manifest["layers"].values():
        total += math.ceil(layer["num_blocks"] * layer["bits"] / 8)
        total += layer["centroids"] * layer["block_size"] * (1 if layer["centroid_dtype"] == "int8" else 2)
        total += 4 if layer["centroid_dtype"] == "int8" else 0
    return total


def _export_dense(model: nn.Module, example_inputs: tuple[Tensor, ...]) -> torch.export.ExportedProgram:
    """Export a copy of `model` with every parametrization baked into a plain tensor (noise off)."""
    dense = copy.deepcopy(model).cpu()
    set_noise(dense, False)
    bake_parametrizations(dense)
    # Two examples are enough for a dynamic batch dimension and small to store.
    with torch.no_grad():
        return export_model(dense if not is_training(dense) else eval_mode(dense),
                            inputs_at_batch(tuple(t.cpu() for t in example_inputs), 2))


def bake_parametrizations(model: nn.Module) -> None:
    """Replace every parametrized tensor of `model` by a plain parameter holding its current value.

    Unlike parametrize.remove_parametrizations this changes only these instances: a deep copy of a parametrized
    module shares its generated class with the original, and remove_parametrizations deletes the property from
    that class, which would break the original model.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        values = {name: getattr(module, name).detach() for name in module.parametrizations}
        module.__class__ = module.__class__.__bases__[0]  # parametrize's generated class derives from the original
        del module._modules["parametrizations"]
        for name, value in values.items():
            module.register_parameter(name, nn.Parameter(value))


def _architecture_bytes(program: torch.export.ExportedProgram) -> bytes:
    skeleton = copy.copy(program)
    skeleton._state_dict = {name: _placeholder(value) for name, value in program.state_dict.items()}
    skeleton._example_inputs = None  # the architecture is all the loader needs
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(skeleton, buffer)
    return lzma.compress(buffer.getvalue(), preset=9)


def _placeholder(value: Tensor) -> Tensor:
    stub = torch.zeros((), dtype=value.dtype).expand(value.shape)
    return nn.Parameter(stub, requires_grad=False) if isinstance(value, nn.Parameter) else stub


def _replace(module: nn.Module, name: str, value: Tensor) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if attribute in owner._parameters:
        owner._parameters[attribute] = nn.Parameter(value, requires_grad=value.is_floating_point())
    elif attribute in owner._buffers:
        owner._buffers[attribute] = value
    else:
        raise KeyError(f"the packed graph has no parameter or buffer '{name}'")
