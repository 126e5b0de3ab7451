"""Rules for a `.pt2`'s tensor payloads: the weights and constants configs and the raw files they point at.

torch reads a config entry with `use_pickle: true` through `torch.load(weights_only=False)`, a constant named
`custom_obj_*` through `torch._C._pickle_load_obj` and `opaque_obj_*` through `pickle.loads`; an empty file
becomes `torch.zeros(size)` of whatever size the entry claims. Here only raw, strided, plain-dtype tensors pass,
each in a file whose real byte size covers the tensor it holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compression.archive.errors import InvalidUpload
from compression.archive.program_rules import FQN

# torch._export.serde.schema.ScalarType value -> bytes per element (every dtype torch 2.13 serializes).
SCALAR_TYPE_ITEMSIZE = {1: 1, 2: 1, 28: 2, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2,
                        29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}
STRIDED_LAYOUT = 7
DEVICE_TYPES = {"cpu", "cuda"}
WEIGHT_FILE = re.compile(r"weight_[0-9]+")
CONSTANT_FILE = re.compile(r"tensor_[0-9]+")


@dataclass(frozen=True)
class Payload:
    """One tensor of a config: a strided view (sizes, strides, offset in elements) of the file `path_name`."""

    fqn: str
    path_name: str
    is_param: bool
    dtype: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    storage_offset: int
    requires_grad: bool
    device: dict

    @property
    def itemsize(self) -> int:
        return SCALAR_TYPE_ITEMSIZE[self.dtype]

    @property
    def extent_bytes(self) -> int:
        """Bytes of the file the view reaches into."""
        if 0 in self.sizes:
            return 0
        last = self.storage_offset + sum((size - 1) * stride for size, stride in zip(self.sizes, self.strides))
        return (last + 1) * self.itemsize


def read_payload_config(config: dict, where: str, file_pattern: re.Pattern) -> dict[str, Payload]:
    """The entries of a parsed `*_config.json`; every one must be a raw tensor in a file named like
    `file_pattern` (weight_N or tensor_N)."""
    entries = config.get("config")
    if not isinstance(entries, dict):
        raise InvalidUpload(f"{where}: must be an object with a 'config' object")
    payloads = {}
    for fqn, meta in entries.items():
        if not FQN.fullmatch(fqn):
            raise InvalidUpload(f"{where}: '{fqn[:120]}' is not a dotted parameter/buffer name")
        if not isinstance(meta, dict):
            raise InvalidUpload(f"{where}: entry '{fqn}' must be an object")
        if meta.get("use_pickle") is not False:
            raise InvalidUpload(f"{where}: entry '{fqn}' is pickled (use_pickle), and pickles are never loaded; "
                                "save plain tensors (no tensor subclasses)")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not file_pattern.fullmatch(path_name):
            raise InvalidUpload(f"{where}: entry '{fqn}' points at '{str(path_name)[:120]}', which is not a raw "
                                "tensor file; custom and opaque objects are never loaded")
        if not isinstance(meta.get("is_param"), bool):
            raise InvalidUpload(f"{where}: entry '{fqn}' has no boolean is_param")
        payloads[fqn] = _payload(fqn, path_name, meta["is_param"], meta.get("tensor_meta"), where)
    return payloads


def _payload(fqn: str, path_name: str, is_param: bool, meta, where: str) -> Payload:
    if not isinstance(meta, dict):
        raise InvalidUpload(f"{where}: entry '{fqn}' has no tensor_meta")
    dtype, layout, device = meta.get("dtype"), meta.get("layout"), meta.get("device")
    if type(dtype) is not int or dtype not in SCALAR_TYPE_ITEMSIZE:
        raise InvalidUpload(f"{where}: entry '{fqn}' has unknown dtype {str(dtype)[:40]}")
    if layout != STRIDED_LAYOUT:
        raise InvalidUpload(f"{where}: entry '{fqn}' is not a strided (dense) tensor")
    if (not isinstance(device, dict) or not isinstance(device.get("type"), str) or device["type"] not in DEVICE_TYPES
            or not (device.get("index") is None or type(device.get("index")) is int)):
        raise InvalidUpload(f"{where}: entry '{fqn}' has device {str(device)[:80]}; only cpu and cuda are known")
    sizes = _ints(meta.get("sizes"), fqn, "sizes", where)
    strides = _ints(meta.get("strides"), fqn, "strides", where)
    offset = _ints([meta.get("storage_offset")], fqn, "storage_offset", where)[0]
    if len(sizes) != len(strides):
        raise InvalidUpload(f"{where}: entry '{fqn}' has {len(sizes)} sizes but {len(strides)} strides")
    if not isinstance(meta.get("requires_grad"), bool):
        raise InvalidUpload(f"{where}: entry '{fqn}' has no boolean requires_grad")
    return Payload(fqn, path_name, is_param, dtype, sizes, strides, offset, meta["requires_grad"], device)


def _ints(values, fqn: str, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(values, list) or not all(
            isinstance(v, dict) and type(v.get("as_int")) is int and v["as_int"] >= 0 for v in values):
        raise InvalidUpload(f"{where}: entry '{fqn}' {field} must be non-negative integers (weights have concrete "
                            "shapes)")
    return tuple(v["as_int"] for v in values)


def check_payload_files(payloads: list[Payload], sizes: dict[str, int], where: str) -> None:
    """Every file a config names exists (`sizes`: file name -> real byte size), holds whole elements of one
    dtype, and covers every view of it; every file is named by some entry."""
    by_file: dict[str, list[Payload]] = {}
    for payload in payloads:
        by_file.setdefault(payload.path_name, []).append(payload)
    for path_name, views in by_file.items():
        if path_name not in sizes:
            raise InvalidUpload(f"{where}: entry '{views[0].fqn}' points at '{path_name}', which the archive does "
                                "not contain")
        size = sizes[path_name]
        if len({view.dtype for view in views}) != 1:
            raise InvalidUpload(f"{where}: '{path_name}' is viewed with different dtypes")
        if size % views[0].itemsize:
            raise InvalidUpload(f"{where}: '{path_name}' holds {size} bytes, not a whole number of "
                                f"{views[0].itemsize}-byte elements")
        for view in views:
            if view.extent_bytes > size:
                raise InvalidUpload(f"{where}: '{path_name}' holds {size} bytes but '{view.fqn}' "
                                    f"{list(view.sizes)} needs {view.extent_bytes}")
    unused = sorted(set(sizes) - set(by_file))
    if unused:
        raise InvalidUpload(f"{where}: '{unused[0]}' is in the archive but no config entry uses it")
