"""Read what an uploaded `.pt2` and `.npz` hold without torch and without unpickling anything.

The API process imports this module to validate uploads at submission time, so it must stay torch-free: the
`.pt2` archive written by `torch.export.save` is a zip whose `<root>/models/model.json` describes the graph
signature (input names, shapes with symbolic dimensions, dtypes) in plain JSON.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

LABEL_ARRAY = "y"

# torch._export.serde.schema.ScalarType values -> numpy dtype names
_PT2_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
               8: "float64", 12: "bool", 13: "bfloat16"}


_INT8_SCALAR_TYPES = (1, 2)


class InvalidUpload(ValueError):
    """The file is not what it claims to be; the message says what is wrong and what to upload instead."""


@dataclass
class TensorSpec:
    name: str
    shape: list[int | None]  # None marks a dynamic dimension
    dtype: str

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


@dataclass
class ModelSignature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    torch_version: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModelSignature":
        return cls([TensorSpec(**t) for t in data["inputs"]], [TensorSpec(**t) for t in data["outputs"]],
                   data["parameter_count"], data.get("torch_version"))


def inspect_pt2(source: str | Path | BinaryIO) -> ModelSignature:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidUpload(f"not a .pt2 archive ({exc}); save the model with torch.export.save(program, path)")
    with archive:
        names = archive.namelist()
        model_json = [n for n in names if n.endswith("/models/model.json")]
        if not model_json:
            raise InvalidUpload("the archive holds no exported program (models/model.json is missing: a truncated file "
                                "or not written by torch.export.save); "
                                "save the model with torch.export.save(program, path) and upload it again")
        try:
            program = json.loads(archive.read(model_json[0]))
            graph_module = program["graph_module"]
            tensors = graph_module["graph"]["tensor_values"]
            signature = graph_module["signature"]
            # Reading every member checks the CRCs, which catches a truncated or corrupted upload here.
            for name in names:
                with archive.open(name) as member:
                    while member.read(1 << 20):
                        pass
        except (KeyError, ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InvalidUpload(f"the .pt2 archive is damaged or truncated ({exc}); upload the file again")
    inputs = [_tensor_spec(spec["user_input"]["arg"], tensors) for spec in signature["input_specs"]
              if "user_input" in spec]
    outputs = [_tensor_spec(spec["user_output"]["arg"], tensors) for spec in signature["output_specs"]
               if "user_output" in spec]
    if not inputs or not outputs:
        raise InvalidUpload("the exported program has no tensor inputs or outputs")
    parameter_count = 0
    for spec in signature["input_specs"]:
        kind = next(iter(spec))
        meta = tensors.get(spec[kind].get("arg", {}).get("name", ""), {}) if kind in ("parameter", "buffer") else {}
        # Quantized programs hold their weights as int8/uint8 buffers; other buffers are statistics and qparams.
        if kind == "parameter" or (kind == "buffer" and meta.get("dtype") in _INT8_SCALAR_TYPES):
            parameter_count += int(np.prod([size.get("as_int", 1) for size in meta["sizes"]]))
    return ModelSignature(inputs, outputs, parameter_count, program.get("torch_version"))


def _tensor_spec(arg: dict, tensors: dict) -> TensorSpec:
    if "as_tensor" not in arg:
        raise InvalidUpload(f"unsupported non-tensor model input or output {arg}; export a model whose inputs "
                            "and outputs are plain tensors")
    name = arg["as_tensor"]["name"]
    meta = tensors[name]
    shape = [size.get("as_int") for size in meta["sizes"]]
    return TensorSpec(name, shape, _PT2_DTYPES.get(meta["dtype"], f"scalar_type_{meta['dtype']}"))


@dataclass
class DatasetManifest:
    """Per split, the arrays it holds: {"train": {"x": {"shape": [...], "dtype": "float32"}, "y": ...}}."""

    splits: dict[str, dict[str, dict]]
    label_range: dict[str, list[int]] = field(default_factory=dict)  # split -> [min, max] of integer labels

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "DatasetManifest":
        return cls(data["splits"], data.get("label_range", {}))

    def inputs(self, split: str) -> dict[str, dict]:
        return {k: v for k, v in self.splits[split].items() if k != LABEL_ARRAY}

    def has_labels(self, split: str) -> bool:
        return LABEL_ARRAY in self.splits.get(split, {})


def inspect_npz(source: str | Path | BinaryIO) -> DatasetManifest:
    """Read array headers (never the data, except small label arrays) so memory does not grow with the file."""
    splits: dict[str, dict[str, dict]] = {}
    label_range: dict[str, list[int]] = {}
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidUpload(f"not a readable .npz file ({exc}); write it with numpy.savez")
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            split, dot, array_name = key.partition(".")
            if not info.filename.endswith(".npy") or not dot or not split or not array_name:
                raise InvalidUpload(f"array '{key}' is not named '<split>.<input>' (e.g. 'train.x', 'val.y')")
            try:
                shape, dtype, labels = _read_member(archive, info, read_data=array_name == LABEL_ARRAY)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InvalidUpload(f"array '{key}' is damaged or truncated ({exc}); upload the file again")
            if dtype.hasobject:
                raise InvalidUpload(f"array '{key}' holds Python objects, which are never unpickled; store plain "
                                    "numeric arrays")
            if dtype.kind not in "biuf":
                raise InvalidUpload(f"array '{key}' has dtype {dtype}; only numeric arrays are supported")
            if len(shape) == 0 or shape[0] == 0:
                raise InvalidUpload(f"array '{key}' is empty: every split needs at least one example")
            splits.setdefault(split, {})[array_name] = {"shape": list(shape), "dtype": str(dtype)}
            if labels is not None:
                if dtype.kind not in "iu" or len(shape) != 1:
                    raise InvalidUpload(f"labels '{key}' must be a 1-d integer array of class indices")
                label_range[split] = [int(labels.min()), int(labels.max())]
    if not splits:
        raise InvalidUpload("the .npz holds no arrays")
    for split, arrays in splits.items():
        if set(arrays) == {LABEL_ARRAY}:
            raise InvalidUpload(f"split '{split}' has labels but no inputs")
        lengths = {name: meta["shape"][0] for name, meta in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise InvalidUpload(f"split '{split}' arrays disagree on the number of examples: {lengths}")
    return DatasetManifest(splits, label_range)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, read_data: bool):
    """Return (shape, dtype, data or None) of one .npy member, reading the rest in chunks to verify its CRC."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)
        data = None
        if read_data and not dtype.hasobject:
            count = int(np.prod(shape))
            data = np.frombuffer(member.read(count * dtype.itemsize), dtype=dtype, count=count)
        while member.read(1 << 20):
            pass
    return shape, dtype, data


def bind_inputs(model_inputs: list[str], arrays: list[str], split: str) -> dict[str, str]:
    """Map each model input to the dataset array that feeds it.

    A single-input model takes the split's only non-label array whatever its name; a model with several inputs
    takes the arrays named like its forward arguments (`train.input_ids` feeds `input_ids`).
    """
    candidates = [a for a in arrays if a != LABEL_ARRAY]
    if len(model_inputs) == 1 and len(candidates) == 1:
        return {model_inputs[0]: candidates[0]}
    missing = [name for name in model_inputs if name not in candidates]
    if missing:
        raise InvalidUpload(f"split '{split}' has no array for model input(s) {missing}; name the arrays "
                            f"'{split}.<input>' after the model's inputs {model_inputs} (found {candidates})")
    return {name: name for name in model_inputs}
