"""Datasets as the library sees them: named splits of arrays bound to a model's inputs, served in batches.

An uploaded `.npz` names its arrays `<split>.<array>` (`train.x`, `train.y`, `val.input_ids`, ...); `y` holds the
labels and is optional: class indices (integers, or whole-number floats, of shape [N] or [N, 1]; kept as int64 [N];
0/1 for a binary classifier with one output), a 0/1 label matrix [N, K] of a multi-label model (kept as float32
[N, K]), or the values a regression model predicts (floats that are not class indices, [N] or [N, K]; kept as
float32, `Split.label_values`). What they mean for the model's output is `compression.labels`.
Arrays are bound to the model's inputs once, when the dataset is built (`compression.inspect.bind_inputs`), and
converted once to the dtype the model takes, so iterating is only indexing and `torch.from_numpy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.npz import NOT_INPUTS, as_labels, is_value_labels, read_npz
from compression.errors import NonFiniteValues
from compression.inspect import LABEL_ARRAY, InvalidUpload, adds_channel_dim, bind_inputs

# Rows checked for NaN/Inf at a time: bounds the temporary boolean array on large uploads.
_FINITE_CHECK_ROWS = 4096


@dataclass
class Batch:
    inputs: tuple[torch.Tensor, ...]  # in the order of the model's inputs
    # int64 class indices [N], a float32 0/1 label matrix [N, K] (multi-label), float32 values [N] or [N, K]
    # (regression), or None for an unlabelled split
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return self.inputs[0].shape[0]


class Split:
    """One split (e.g. "train"): an array per model input, in input order, and optional labels (int64 class
    indices, a float32 0/1 label matrix, or float32 values: `label_values`).

    `dtypes` (one per input) are what batches are cast to; by default the arrays' own dtypes.
    """

    def __init__(self, name: str, inputs: dict[str, np.ndarray], labels: np.ndarray | None = None,
                 dtypes: list[torch.dtype] | None = None):
        lengths = {input_name: len(array) for input_name, array in inputs.items()}
        if labels is not None:
            lengths[LABEL_ARRAY] = len(labels)
        if not inputs or len(set(lengths.values())) != 1:
            raise InvalidUpload(f"split '{name}' needs inputs of one common length, got {lengths}")
        self.name = name
        self.inputs = inputs
        self.labels = labels
        # The labels are values a regression model predicts (`Dataset.label_as_values` may say so of whole numbers).
        self.label_values = labels is not None and is_value_labels(labels)
        self.dtypes = dtypes or [torch.from_numpy(a[:0]).dtype for a in inputs.values()]
        # The largest batch the model accepts (an export bounded with Dim("batch", max=...)); None: any.
        self.max_batch: int | None = None
        # The largest batch evaluations read (`evaluation_batches`): a model with large outputs per example (a
        # causal LM's logits over its vocabulary at every position) is evaluated a few examples at a time.
        self.evaluation_max_batch: int | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, limit: int | None = None,
                device: str | torch.device = "cpu") -> Iterator[Batch]:
        """Yield batches of at most `batch_size` (and `max_batch`) examples; `limit` caps the number of *examples*
        served.

        With `shuffle` the order is a permutation drawn from `seed`, so two calls with the same seed agree.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch_size = min(batch_size, self.max_batch or batch_size)
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        if limit is not None:
            order = order[:limit]
        for start in range(0, len(order), batch_size):
            yield self._gather(order[start:start + batch_size], device)

    def evaluation_batches(self, batch_size: int, limit: int | None = None) -> Iterator[Batch]:
        """The batches every evaluation of a job reads, in order: `batches` of at most `evaluation_max_batch`."""
        return self.batches(min(batch_size, self.evaluation_max_batch or batch_size), limit=limit)

    def head(self, count: int, device: str | torch.device = "cpu") -> Batch:
        """The first `count` examples (at most `max_batch`) as one batch (e.g. example inputs for export or
        tracing)."""
        return self._gather(np.arange(min(count, len(self), self.max_batch or count)), device)

    def _gather(self, indices: np.ndarray, device) -> Batch:
        # A contiguous range is a view; fancy indexing would copy every batch of an unshuffled pass.
        contiguous = len(indices) and indices[-1] - indices[0] == len(indices) - 1 and np.all(np.diff(indices) == 1)
        select = slice(int(indices[0]), int(indices[-1]) + 1) if contiguous else indices
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(a[select])).to(device, dtype)
                       for a, dtype in zip(self.inputs.values(), self.dtypes))
        labels = None if self.labels is None else torch.from_numpy(self.labels[select]).to(device)
        return Batch(inputs, labels)


class Dataset:
    """Named splits whose arrays are bound to the model inputs `input_names` (in the model's order)."""

    def __init__(self, splits: dict[str, Split], input_names: list[str], ignored_arrays: list[str] | None = None):
        self.splits = splits
        self.input_names = list(input_names)
        self.max_batch: int | None = None
        # Arrays that feed no model input and are not labels (e.g. a tokenizer's token_type_ids for a model that
        # takes input_ids and attention_mask): left out, and named in the job's metrics so it is not silent.
        self.ignored_arrays = list(ignored_arrays or [])

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    def split(self, name: str) -> Split:
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(f"the dataset has no split '{name}'; it has {self.split_names}") from None

    def limit_batches(self, max_batch: int | None) -> None:
        """Serve no batch larger than `max_batch` from any split (the model's bound on its batch dimension)."""
        self.max_batch = max_batch
        for split in self.splits.values():
            split.max_batch = max_batch

    @property
    def has_label_values(self) -> bool:
        return any(split.label_values for split in self.splits.values())

    def label_as_values(self) -> None:
        """Read every split's labels as the values a regression model predicts (float32), whole numbers
        included: a regression job's ratings 1..5 are values, not classes."""
        for split in self.splits.values():
            if split.labels is not None:
                split.labels, split.label_values = split.labels.astype(np.float32), True

    def label_per_position(self) -> None:
        """Read [N, L] labels as a class index per position of a sequence output ([N, L, C]: a token classifier's
        tags, -100 where none applies), not as a multi-label or value matrix."""
        for split in self.splits.values():
            labels = split.labels
            if labels is None or labels.ndim != 2:
                continue
            if labels.dtype.kind == "f" and not bool((labels == np.round(labels)).all()):
                raise InvalidUpload(f"split '{split.name}' labels a sequence output [N, L, C] with fractional "
                                    "numbers; give a class index per position (-100 where none applies)")
            split.labels, split.label_values = labels.astype(np.int64), False

    @property
    def num_classes(self) -> int | None:
        """1 + the largest label of any split, or None when no split is labelled."""
        maxima = [int(s.labels.max()) for s in self.splits.values() if s.labels is not None and len(s.labels)]
        return max(maxima) + 1 if maxima else None

    @classmethod
    def load(cls, path: str | Path, input_names: list[str],
             input_dtypes: Mapping[str, str | torch.dtype] | None = None,
             limits: ArchiveLimits = DEFAULT_LIMITS,
             input_shapes: Mapping[str, list[int | None]] | None = None) -> "Dataset":
        """Read an uploaded `.npz` under the archive rules (`compression.archive.npz`: bounded, sizes checked
        against headers, nothing unpickled) and bind its arrays to `input_names`."""
        arrays = read_npz(Path(path), limits, keep_arrays=True).arrays
        return cls.from_arrays(arrays, input_names, input_dtypes, input_shapes)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], input_names: list[str],
                    input_dtypes: Mapping[str, str | torch.dtype] | None = None,
                    input_shapes: Mapping[str, list[int | None]] | None = None) -> "Dataset":
        """Build from `{"<split>.<array>": array}`; `input_dtypes` maps input name -> dtype the model takes.

        Without a dtype for an input, floating arrays become float32 and integer arrays int64 (token ids feed
        `embedding`, which takes int64), which is what nearly every model wants. With `input_shapes` (None for a
        dynamic dimension), an array that lacks only the input's size-1 channel dimension gets it
        (`compression.inspect.adds_channel_dim`: grayscale [N, H, W] for [N, 1, H, W]).
        """
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for key, array in arrays.items():
            split_name, dot, array_name = key.partition(".")
            if not dot or not split_name or not array_name:
                raise InvalidUpload(f"array '{key}' is not named '<split>.<input>' (e.g. 'train.x', 'val.y')")
            grouped.setdefault(split_name, {})[array_name] = np.asarray(array)
        if not grouped:
            raise InvalidUpload("the dataset holds no arrays")
        splits, ignored = {}, []
        for split_name, split_arrays in grouped.items():
            binding = bind_inputs(list(input_names), list(split_arrays), split_name)
            ignored += [f"{split_name}.{name}" for name in split_arrays
                        if name not in NOT_INPUTS and name not in binding.values()]
            for name in input_names:
                array, wanted = split_arrays[binding[name]], (input_shapes or {}).get(name)
                if wanted is not None and adds_channel_dim(array.shape, wanted):
                    split_arrays[binding[name]] = array[:, None]
            converted = {name: _as_model_dtype(split_arrays[binding[name]], (input_dtypes or {}).get(name))
                         for name in input_names}
            for name in input_names:
                # The original shows NaN/Inf (an integer conversion would hide them); the converted array also
                # shows float64 values that overflow the model's float32.
                original, (array, dtype) = split_arrays[binding[name]], converted[name]
                key = f"{split_name}.{binding[name]}"
                _check_finite(original, key)
                if array.dtype.kind == "f" and array.dtype != original.dtype:
                    _check_finite(array, key, f"values beyond the range of the model's {dtype} input; rescale them")
            labels = split_arrays.get(LABEL_ARRAY)
            if labels is not None:
                labels = as_labels(labels, f"{split_name}.{LABEL_ARRAY}")
            splits[split_name] = Split(split_name, {name: array for name, (array, _) in converted.items()}, labels,
                                       [dtype for _, dtype in converted.values()])
        return cls(splits, input_names, sorted(ignored))


def _as_model_dtype(array: np.ndarray, dtype: str | torch.dtype | None) -> tuple[np.ndarray, torch.dtype]:
    """The array converted once to what the model takes, and the torch dtype its batches are cast to.

    numpy has no bfloat16: such inputs are stored as float32 and cast batch by batch.
    """
    if dtype is None:
        dtype = torch.float32 if array.dtype.kind == "f" else torch.int64
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    storage = np.float32 if dtype == torch.bfloat16 else torch.empty((), dtype=dtype).numpy().dtype
    return np.ascontiguousarray(array, dtype=storage), dtype


def _check_finite(array: np.ndarray, key: str, problem: str = "NaN or Inf") -> None:
    """Refuse NaN/Inf inputs up front: they would surface much later as a NaN loss or a useless calibration."""
    if array.dtype.kind not in "fc":
        return
    for start in range(0, len(array), _FINITE_CHECK_ROWS):
        finite = np.isfinite(array[start:start + _FINITE_CHECK_ROWS])
        if not finite.all():
            row = start + int(np.argwhere(~finite)[0][0])
            raise NonFiniteValues(f"array '{key}' holds {problem} (first at row {row}); clean or drop those rows "
                                  "and upload the dataset again")
