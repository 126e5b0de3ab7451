"""An uploaded `.npz` read under the archive rules: what the API inspects and what the worker's datasets load.

`np.load` would trust each `.npy` header and allocate what it claims (a header of 10**12 rows fails late with
"Unable to allocate 233 TiB"), and decompress a bzip2 member whole. Here each member's header is read with numpy's
bounded header parser, the member's real size must equal header + shape x itemsize (counted while reading, in
chunks), labels are scanned chunk by chunk for their range and form (`label_values`: class indices, a 0/1 label
matrix [N, K], or values a regression model predicts), float inputs for NaN/Inf, and arrays are read into buffers
of the checked size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from compression.archive.errors import InvalidUpload
from compression.archive.limits import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.zipread import CHUNK_BYTES, BoundedZip, MemberReader, NotAZip

LABEL_ARRAY = "y"
# A speech split's reference transcripts (an image-to-text split's reference texts), one string per example (numpy
# unicode, never objects), read by no model input: a CTC recognizer's transcripts' word error rate
# (`compression.ctc_transcripts`); the labels of a speech-seq2seq or image-to-text model, their tokens
# (`compression.array_seq2seq`).
TRANSCRIPT_ARRAY = "transcript"
NOT_INPUTS = (LABEL_ARRAY, TRANSCRIPT_ARRAY)
# A position no label reads in the [N, L] labels of a sequence output (transformers' ignore index).
IGNORED_LABEL = -100
# A segmentation mask's value for an unlabelled pixel where config.json names none (transformers'
# semantic_loss_ignore_index default; ADE20K's and Cityscapes' masks use it)
MASK_IGNORE_INDEX = 255
_MAX_HEADER_BYTES = 10_000  # numpy's own default cap on a header it will parse


@dataclass
class NpzContents:
    """Per split, each array's {"shape", "dtype"} (labels that are values also "values": true); per labelled split,
    [min, max] of its labels (floats for values); and, when asked for, the arrays themselves by key ("train.x")."""

    splits: dict[str, dict[str, dict]]
    label_range: dict[str, list[int | float]]
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def read_npz(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS,
             keep_arrays: bool = False) -> NpzContents:
    """Check every member of the `.npz` in `source`; with `keep_arrays`, also return its arrays."""
    try:
        archive = BoundedZip(source, limits, "the .npz file")
    except NotAZip as exc:
        raise InvalidUpload(f"not a readable .npz file ({exc}); write it with numpy.savez") from None
    contents = NpzContents({}, {})
    with archive:
        # Headers first: inconsistent splits are refused before any data is read or allocated.
        headers = {}
        for name in archive.members:
            key = name.removesuffix(".npy")
            split, dot, array_name = key.partition(".")
            if not name.endswith(".npy"):
                raise InvalidUpload(f"the file holds '{name}', which is not a numpy array (.npy): write the dataset "
                                    "with numpy.savez(path, **{'train.x': ..., 'train.y': ...}) (a torch.save or "
                                    "pickle file is never read)")
            if not dot or not split or not array_name:
                raise InvalidUpload(f"array '{key}' is not named '<split>.<input>' (e.g. 'train.x', 'val.y')"
                                    + _naming_hint(key))
            with archive.open(name) as member:
                headers[name] = _header(member, key)
            shape, dtype, _ = headers[name]
            if array_name == LABEL_ARRAY and (problem := label_layout_problem(key, shape, dtype)):
                raise InvalidUpload(problem)
            contents.splits.setdefault(split, {})[array_name] = {"shape": list(shape), "dtype": str(dtype)}
        _check_splits(contents.splits)
        for name, (shape, dtype, fortran) in headers.items():
            key = name.removesuffix(".npy")
            is_label = key.partition(".")[2] == LABEL_ARRAY
            with archive.open(name) as member:
                _header(member, key)
                array = _read_data(member, key, shape, dtype, fortran, keep_arrays, is_label)
            if is_label:
                split = key.partition(".")[0]
                values = label_values(array, key, width=_label_width(shape)) if keep_arrays else array.values
                extremes = [float(array.min()), float(array.max())]
                contents.label_range[split] = extremes if values else [int(value) for value in extremes]
                if values:
                    contents.splits[split][LABEL_ARRAY]["values"] = True
            if keep_arrays:
                contents.arrays[key] = array
    return contents


def array_shapes(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS) -> dict[str, list[int]]:
    """Each array's shape by key ("train.x"), from the members' headers alone: no data is read."""
    return {key: shape for key, (shape, _) in array_headers(source, limits).items()}


def array_headers(source: str | Path | BinaryIO,
                  limits: ArchiveLimits = DEFAULT_LIMITS) -> dict[str, tuple[list[int], np.dtype]]:
    """Each array's shape and dtype by key, from the members' headers alone."""
    with BoundedZip(source, limits, "the .npz file") as archive:
        headers = {}
        for name in archive.members:
            with archive.open(name) as member:
                shape, dtype, _ = _header(member, name.removesuffix(".npy"))
                headers[name.removesuffix(".npy")] = (list(shape), dtype)
    return headers


def _naming_hint(key: str) -> str:
    """`numpy.savez(path, train_x=...)` is how keyword arguments allow it; the dotted name needs a dict."""
    split, underscore, array_name = key.partition("_")
    if underscore and split and array_name:
        return (f"; to name it '{split}.{array_name}' pass a dict: numpy.savez(path, **{{'{split}.{array_name}': "
                "...})")
    return "; pass a dict: numpy.savez(path, **{'train.x': ..., 'train.y': ...})"


def _header(member: MemberReader, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member, max_header_size=_MAX_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member, max_header_size=_MAX_HEADER_BYTES)
        else:
            raise ValueError(f".npy format version {version} is not read; write the file with numpy.savez")
    except (ValueError, SyntaxError, EOFError) as exc:
        raise InvalidUpload(f"array '{key}' is damaged or truncated ({exc}); upload the file again") from None
    if key.partition(".")[2] == TRANSCRIPT_ARRAY:
        if dtype.kind != "U" or len(shape) != 1:
            raise InvalidUpload(f"transcripts '{key}' must be one string per example, a 1-D numpy unicode array "
                                f"(numpy.array(['HELLO WORLD', ...])), not {dtype} of shape {list(shape)}")
        if shape[0] == 0:
            raise InvalidUpload(f"array '{key}' is empty: every split needs at least one example")
        return shape, dtype, fortran
    if key.partition(".")[2] == LABEL_ARRAY and dtype.kind in "USO":
        raise InvalidUpload(f"labels '{key}' are {'strings' if dtype.kind in 'US' else 'Python objects'} "
                            f"(dtype {dtype}); store class indices 0..C-1 instead, e.g. "
                            "numpy.unique(names, return_inverse=True)[1]")
    if dtype.hasobject:
        raise InvalidUpload(f"array '{key}' holds Python objects, which are never unpickled; store plain "
                            "numeric arrays")
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidUpload(f"array '{key}' has dtype {dtype}; only numeric arrays are supported")
    if len(shape) == 0 or shape[0] == 0:
        raise InvalidUpload(f"array '{key}' is empty: every split needs at least one example")
    return shape, dtype, fortran


def _read_data(member: MemberReader, key: str, shape: tuple[int, ...], dtype: np.dtype, fortran: bool,
               keep: bool, is_label: bool) -> np.ndarray | None:
    """Read the data after the header, which must be exactly shape x itemsize bytes. Kept arrays are read into
    their final buffer (the loader checks them); otherwise labels are reduced to their extremes and float arrays
    checked for NaN/Inf chunk by chunk."""
    expected = math.prod(shape) * dtype.itemsize
    header_bytes = member.size
    if expected > member.cap - header_bytes:
        raise InvalidUpload(f"array '{key}' claims shape {list(shape)} ({expected} bytes); the limit for one array "
                            f"is {member.cap} bytes")
    flat = np.empty(math.prod(shape), dtype) if keep else None
    target = flat.view(np.uint8) if keep else None
    extremes = _LabelExtremes()
    pending = b""
    while chunk := member.read(CHUNK_BYTES):
        start = member.size - len(chunk) - header_bytes
        if start + len(chunk) > expected:
            raise InvalidUpload(f"array '{key}' holds more data than its shape {list(shape)} {dtype}")
        if keep:
            target[start:start + len(chunk)] = np.frombuffer(chunk, np.uint8)
        elif is_label or dtype.kind == "f":
            pending += chunk
            whole = len(pending) - len(pending) % dtype.itemsize
            if whole:
                values = np.frombuffer(pending[:whole], dtype)
                first = (start + len(chunk) - len(pending)) // dtype.itemsize  # index of values[0] in the array
                if is_label:
                    extremes.add(values, label_values(values, key, first_index=first, width=_label_width(shape)))
                else:
                    _check_finite(values, key, first, shape, fortran)
                pending = pending[whole:]
    if member.size - header_bytes != expected:
        raise InvalidUpload(f"array '{key}' holds {member.size - header_bytes} bytes of data but its header "
                            f"claims shape {list(shape)} {dtype} ({expected} bytes); the file is damaged or "
                            "truncated")
    if keep:
        return flat.reshape(shape, order="F" if fortran else "C")
    return extremes if is_label else None


class _LabelExtremes:
    """The smallest and largest label of an array scanned chunk by chunk, and whether any chunk held values."""

    def __init__(self):
        self.low, self.high, self.values = math.inf, -math.inf, False

    def add(self, labels: np.ndarray, values: bool) -> None:
        if labels.size:
            self.low, self.high = min(self.low, float(labels.min())), max(self.high, float(labels.max()))
        self.values = self.values or values

    def min(self) -> float:
        return self.low

    def max(self) -> float:
        return self.high


def _check_finite(values: np.ndarray, key: str, first: int, shape: tuple[int, ...], fortran: bool) -> None:
    """NaN/Inf inputs are refused at upload (the job's loader checks again, against the model's dtype): they
    would surface much later as a NaN loss or a useless calibration."""
    finite = np.isfinite(values)
    if not finite.all():
        index = first + int(np.argmin(finite))
        row = index % shape[0] if fortran else index // max(1, math.prod(shape[1:]))
        raise InvalidUpload(f"array '{key}' holds NaN or Inf (first at row {row}); clean or drop those rows and "
                            "upload the dataset again")


def _check_splits(splits: dict[str, dict[str, dict]]) -> None:
    if not splits:
        raise InvalidUpload("the .npz holds no arrays")
    for split, arrays in splits.items():
        if set(arrays) <= set(NOT_INPUTS):
            held = " and ".join("labels" if name == LABEL_ARRAY else "transcripts" for name in sorted(arrays))
            raise InvalidUpload(f"split '{split}' has {held} but no inputs")
        lengths = {name: meta["shape"][0] for name, meta in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise InvalidUpload(f"split '{split}' arrays disagree on the number of examples: {lengths}")


def is_multi_hot(shape: tuple[int, ...] | list[int]) -> bool:
    """Whether labels of this shape are a 0/1 matrix [N, K] (multi-label: one independent label per output),
    rather than one class index per example ([N], or a column [N, 1])."""
    return len(shape) == 2 and shape[1] != 1


def _label_width(shape: tuple[int, ...] | list[int]) -> int:
    """Labels a row holds: K for a label matrix, else 1 (class indices)."""
    return shape[1] if is_multi_hot(shape) else 1


def label_layout_problem(key: str, shape: tuple[int, ...] | list[int], dtype: np.dtype) -> str | None:
    """Why labels of this shape and dtype are none of class indices, a 0/1 label matrix or values, or None. A column
    [N, 1] is taken as [N], booleans as classes 0 and 1, and floats as class indices when every value is whole
    (`label_values`); a matrix [N, K] is multi-label when it holds only 0 and 1. Whether the model's outputs fit
    them is checked when a job is submitted. Integer masks [N, H, W] are a segmentation model's: a class per
    pixel."""
    if len(shape) == 3 and dtype.kind in "biu":
        return None
    if len(shape) not in (1, 2) or dtype.kind not in "biuf":
        return (f"labels '{key}' must be class indices: integers (booleans, or whole-number floats) of shape [N] or "
                "[N, 1], a 0/1 matrix [N, K] for a multi-label model, the float values [N] or [N, K] a "
                "regression model predicts, or integer masks [N, H, W] for a segmentation model")
    return None


def label_values(labels: np.ndarray, key: str, first_index: int = 0, width: int = 1) -> bool:
    """Whether labels (all of them or a chunk) are values a regression model predicts rather than classes: floats
    that are not whole ([N]: 2.0 is class 2, 2.5 is a value), or a matrix ([N, K], `width` K > 1) holding more than
    0 and 1. NaN and Inf are refused. `first_index`: the position of labels[0] in the whole (flattened) array, for
    the row a message names."""
    flat = labels.reshape(-1)
    if labels.dtype.kind == "f" and flat.size and not np.isfinite(flat).all():
        row = (first_index + int(np.argmin(np.isfinite(flat)))) // width
        raise InvalidUpload(f"labels '{key}' hold NaN or Inf at row {row}; clean or drop those rows")
    if not flat.size:
        return False
    if width > 1:
        return bool(((flat != 0) & (flat != 1)).any())
    return labels.dtype.kind == "f" and bool((flat != np.round(flat)).any())


def as_labels(labels: np.ndarray, key: str) -> np.ndarray:
    """Labels as the library keeps them: 1-d int64 class indices (an [N, 1] column squeezed, whole-number floats
    cast), a 0/1 matrix [N, K] as float32 (multi-label targets), values as float32 [N] or [N, K] (a regression
    model's; `is_value_labels` tells them from the others), or int64 masks [N, H, W]; anything else refused with
    what to change."""
    problem = label_layout_problem(key, labels.shape, labels.dtype)
    if problem:
        raise InvalidUpload(problem)
    if labels.ndim == 3:  # a segmentation model's masks: a class per pixel
        return np.ascontiguousarray(labels, np.int64)
    values = label_values(labels, key, width=_label_width(labels.shape))
    if is_multi_hot(labels.shape):
        return np.ascontiguousarray(labels, np.float32)
    return labels.reshape(len(labels)).astype(np.float32 if values else np.int64)


def is_value_labels(labels: np.ndarray) -> bool:
    """Whether labels as `as_labels` keeps them are values: float [N], or a float matrix not only 0 and 1."""
    return labels.dtype.kind == "f" and (labels.ndim == 1 or bool(((labels != 0) & (labels != 1)).any()))
