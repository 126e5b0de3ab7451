"""The packed iPQ artifact: one safetensors file that `load_ipq` turns back into a runnable module.

A small model's file would be dominated by per-tensor headers if every weight were its own safetensors entry, so
everything of one kind is concatenated into one flat tensor and located by a compressed manifest:

- `indices` uint8: for each product-quantized weight in manifest order, the codeword index of every block (block
  order: see `compression.pq.layers`) at b = ceil(log2 K) bits each, as one bit stream starting on a byte
  boundary at the layer's `indices_offset`: index j occupies stream bits [j*b, (j+1)*b), its least significant bit
  first, and stream bit i is bit (i mod 8) of byte i // 8 (LSB first); a layer's last byte is zero-padded. With
  the manifest's `indices_codec` "xz" (version 3) the section holds these bytes xz-compressed (LZMA2 with no
  literal context, lc=0: an index byte says little about the next), the entropy-coding step of Han et al.'s Deep
  Compression: k-means leaves codewords unequally used, so the packed file of a pretrained encoder shrinks 1-4 %
  (all-MiniLM-L6-v2: 5,749,144 -> 5,534,948 bytes, `bench.real_models.ipq_row --model minilm`). "raw" (and
  version 2): stored as they are, which a model so small that xz's header outweighs the saving keeps.
- `centroids.float16` / `centroids.int8`: each layer's (K, block_size) codebook, row-major, at its
  `centroid_offset` (in elements). int8 codebooks ("iPQ + int8") are symmetric: centroid = code * scale, codes in
  -127..127, with the layer's scale at `centroid_scales[scale_index]` (float32).
- `dense.<storage dtype>`: every other parameter and buffer (biases, norms, layers kept in full precision),
  flattened at its `offset`: floating tensors as float16 or float32 (`dense_dtype`), integer ones as they are.
- `graph` uint8: an xz (lzma) compressed `torch.export` archive of the model whose parameters and buffers are all
  stride-0 placeholders, i.e. the architecture only (without the nodes' provenance, as `save_program` writes
  it), with a dynamic batch dimension (and, with int8 activations, the rounding of each quantized layer's input
  with its scale and zero point as constants).
- `manifest` uint8: xz-compressed JSON {"layers": [{"name", "shape", "block_size", "centroids", "bits",
  "num_blocks", "centroid_dtype", "indices_offset", "centroid_offset", "scale_index"}], "dense": [{"name",
  "shape", "dtype", "storage", "offset"}], "unread": [names], "indices_codec": "xz" or "raw"}. Parameters and
  buffers that no node of the graph reads are listed in "unread" and not stored (they stay zero placeholders when
  loaded).
- header metadata: `format` = "modelpress.ipq", `version` = "3" (version 2 files, raw indices, still load).

The file size is the artifact's size; `theoretical_bytes(manifest)` counts indices, centroids, scales and dense
tensors, so the rest is the safetensors header, the compressed manifest and the compressed graph.
"""

from __future__ import annotations

import copy
import io
import json
import lzma
import math
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.decompress import inflate
from compression.archive.jsontext import parse_json
from compression.io import drop_debug_metadata, export_model, inputs_at_batch, load_program_bytes
from compression.modes import eval_mode, is_training
from compression.pq.activations import quantize_layer_inputs
from compression.pq.parametrizations import PQWeight, int8_codes, parametrizations_of, set_noise
from compression.program_device import move_model

FORMAT = "modelpress.ipq"
VERSION = "3"
READABLE_VERSIONS = ("2", "3")
INDEX_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
GRAPH_KEY = "graph"
MANIFEST_KEY = "manifest"
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


def save_ipq(model: nn.Module, example_inputs: tuple[Tensor, ...], path: str | Path, dense_dtype: str = "float16",
             activation_calibration: Iterable[tuple[Tensor, ...]] | None = None) -> dict:
    """Write `model` (with PQWeight parametrizations) to `path`; returns the manifest.

    With `activation_calibration` (batches of inputs) the inputs of the product-quantized layers are quantized to
    int8 in the packed graph (see `compression.pq.activations`).
    """
    sections = _Sections()
    layers = []
    for name, pq in parametrizations_of(model, PQWeight).items():
        bits = index_bits(pq.centroids.shape[0])
        centroids = pq.centroids.detach().float().cpu()
        layer = {"name": name, "shape": list(pq.shape), "block_size": pq.block_size,
                 "centroids": pq.centroids.shape[0], "bits": bits, "num_blocks": len(pq.assignments),
                 "centroid_dtype": pq.centroid_dtype,
                 "indices_offset": sections.add("indices", pack_indices(pq.assignments, bits))}
        if pq.centroid_dtype == "int8":
            codes, scale = int8_codes(centroids)
            layer["centroid_offset"] = sections.add("centroids.int8", codes.to(torch.int8))
            layer["scale_index"] = sections.add("centroid_scales", scale.reshape(1))
        else:
            layer["centroid_offset"] = sections.add("centroids.float16", centroids.half())
        layers.append(layer)
    quantized = {layer["name"] for layer in layers}
    program = _export_dense(model, example_inputs, quantized if activation_calibration is not None else set(),
                            activation_calibration or [])
    dense, unread = [], _unread_state(program)
    for name, value in program.state_dict.items():
        if name in quantized or name in unread:
            continue
        value = value.detach().cpu()
        stored = value.to(_DTYPES[dense_dtype]) if value.is_floating_point() else value
        storage = str(stored.dtype).removeprefix("torch.")
        dense.append({"name": name, "shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."),
                      "storage": storage, "offset": sections.add(f"dense.{storage}", stored)})
    tensors = sections.tensors()
    codec = "raw"
    if "indices" in tensors:
        raw = tensors["indices"].numpy().tobytes()
        packed = lzma.compress(raw, format=lzma.FORMAT_XZ, filters=INDEX_FILTERS)
        if len(packed) < len(raw):
            tensors["indices"], codec = _bytes_tensor(packed), "xz"
    manifest = {"layers": layers, "dense": dense, "unread": sorted(unread), "indices_codec": codec}
    tensors[GRAPH_KEY] = _bytes_tensor(_architecture_bytes(program))
    tensors[MANIFEST_KEY] = _bytes_tensor(lzma.compress(json.dumps(manifest).encode(), preset=9))
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": VERSION})
    return manifest


def load_ipq(path: str | Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> nn.Module:
    """Rebuild a runnable module (an exported GraphModule in eval mode) from a packed iPQ file; its manifest and
    graph are decompressed under `limits` and the graph is loaded under every archive rule."""
    with safe_open(str(path), framework="pt") as packed:
        metadata = packed.metadata() or {}
        if metadata.get("format") != FORMAT or metadata.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"{path} is not a {FORMAT} file of version {' or '.join(READABLE_VERSIONS)}")
        tensors = {key: packed.get_tensor(key) for key in packed.keys()}
    manifest_bytes = inflate(tensors[MANIFEST_KEY].numpy().tobytes(), limits.max_metadata_bytes,
                             f"{path}: {MANIFEST_KEY}", "lzma")
    manifest = parse_json(manifest_bytes, f"{path}: {MANIFEST_KEY}", limits)
    if manifest.get("indices_codec", "raw") == "xz":  # capped at what the manifest's layers need
        expected = sum(math.ceil(layer["num_blocks"] * layer["bits"] / 8) for layer in manifest["layers"])
        index_bytes = inflate(tensors["indices"].numpy().tobytes(), min(expected, limits.max_member_bytes),
                              f"{path}: indices", "lzma")
        tensors["indices"] = _bytes_tensor(index_bytes)
    graph = inflate(tensors[GRAPH_KEY].numpy().tobytes(), limits.max_member_bytes, f"{path}: {GRAPH_KEY}", "lzma")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the stride-0 placeholders are not complete tensors
        module = load_program_bytes(graph, limits).module()
    for layer in manifest["layers"]:
        _replace(module, layer["name"], decode_weight(tensors, layer))
    for entry in manifest["dense"]:
        flat = tensors[f"dense.{entry['storage']}"]
        count = math.prod(entry["shape"])
        value = flat[entry["offset"]:entry["offset"] + count].reshape(entry["shape"])
        _replace(module, entry["name"], value.to(getattr(torch, entry["dtype"])).clone())
    return module


def decode_weight(tensors: dict[str, Tensor], layer: dict) -> Tensor:
    index_bytes = math.ceil(layer["num_blocks"] * layer["bits"] / 8)
    start = layer["indices_offset"]
    indices = unpack_indices(tensors["indices"][start:start + index_bytes], layer["bits"], layer["num_blocks"])
    count = layer["centroids"] * layer["block_size"]
    flat = tensors[f"centroids.{layer['centroid_dtype']}"]
    start = layer["centroid_offset"]
    centroids = flat[start:start + count].float().reshape(layer["centroids"], layer["block_size"])
    if layer["centroid_dtype"] == "int8":
        centroids = centroids * tensors["centroid_scales"][layer["scale_index"]]
    return centroids[indices].reshape(layer["shape"])


def theoretical_bytes(manifest: dict) -> int:
    """Indices at log2(K) bits, centroids (+ int8 scales) and dense tensors: the file's payload."""
    total = 0
    for layer in manifest["layers"]:
        total += math.ceil(layer["num_blocks"] * layer["bits"] / 8)
        total += layer["centroids"] * layer["block_size"] * (1 if layer["centroid_dtype"] == "int8" else 2)
        total += 4 if layer["centroid_dtype"] == "int8" else 0
    for entry in manifest["dense"]:
        total += math.prod(entry["shape"]) * getattr(torch, entry["storage"]).itemsize
    return total


class _Sections:
    """Flat tensors, one per section name, built by appending; `add` returns where the appended data starts."""

    def __init__(self):
        self._parts: dict[str, list[Tensor]] = {}
        self._lengths: dict[str, int] = {}

    def add(self, section: str, value: Tensor) -> int:
        offset = self._lengths.get(section, 0)
        flat = value.detach().cpu().reshape(-1)
        self._parts.setdefault(section, []).append(flat)
        self._lengths[section] = offset + flat.numel()
        return offset

    def tensors(self) -> dict[str, Tensor]:
        return {section: torch.cat(parts).contiguous() for section, parts in self._parts.items()}


def _bytes_tensor(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _export_dense(model: nn.Module, example_inputs: tuple[Tensor, ...], int8_input_layers: set[str],
                  calibration: Iterable[tuple[Tensor, ...]]) -> torch.export.ExportedProgram:
    """Export a copy of `model` with every parametrization baked into a plain tensor (noise off), and int8 inputs
    for the layers named in `int8_input_layers`."""
    dense = move_model(copy.deepcopy(model), "cpu")
    set_noise(dense, False)
    bake_parametrizations(dense)
    # Two examples are enough for a dynamic batch dimension and small to store.
    inputs = inputs_at_batch(tuple(t.cpu() for t in example_inputs), 2)
    with torch.no_grad():
        program = export_model(dense if not is_training(dense) else eval_mode(dense), inputs)
        if not int8_input_layers:
            return program
        graph_module = program.module()
        quantize_layer_inputs(graph_module, int8_input_layers, calibration)
        return export_model(graph_module, inputs)


def _unread_state(program: torch.export.ExportedProgram) -> set[str]:
    """Parameters and buffers no node of the graph reads (a BERT's pooler when the program returns the hidden
    states): export keeps them, but storing them would only make the file bigger (131 KB of a 1.8 MB rxnfp file)."""
    signature = program.graph_signature
    state = signature.inputs_to_parameters | signature.inputs_to_buffers
    return {state[node.name] for node in program.graph.nodes
            if node.op == "placeholder" and node.name in state and not node.users}


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
    drop_debug_metadata(program)  # 13 % of a small model's compressed graph (PESTO: 3,372 -> 2,940 bytes)
    skeleton = copy.copy(program)
    skeleton._state_dict = {name: _placeholder(value) for name, value in program.state_dict.items()}
    skeleton._example_inputs = None  # the architecture is all the loader needs
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(skeleton, buffer)
    return lzma.compress(buffer.getvalue(), preset=9)


def _placeholder(value: Tensor) -> Tensor:
    # (an empty tensor as itself: one element expanded to no elements failed torch.export.save, "numel: integer
    # multiplication overflow", on a model with zero register tokens)
    stub = torch.empty(value.shape, dtype=value.dtype) if value.numel() == 0 else \
        torch.zeros((), dtype=value.dtype).expand(value.shape)
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
