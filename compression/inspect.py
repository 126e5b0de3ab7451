"""Read what an uploaded `.pt2` and `.npz` hold without torch and without unpickling anything.

The API process imports this module to validate uploads at submission time, so it must stay torch-free. Both
readers apply every rule of `compression.archive` (the same rules the library's loaders apply), so a hostile or
malformed upload is refused here with a message naming the offending entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from compression.archive import DEFAULT_LIMITS, ArchiveLimits, InvalidUpload
from compression.archive.file_kinds import describe_dataset_bytes, peek
from compression.archive.folder import is_tar
from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import looks_like_jsonl, manifest_splits, read_jsonl
from compression.archive.npz import LABEL_ARRAY, NOT_INPUTS, read_npz
from compression.archive.program_rules import called_operators
from compression.archive.pt2 import read_pt2
from compression.archive.signature import ModelSignature, TensorSpec
from compression.archive.zipread import BoundedZip, NotAZip

__all__ = ["LABEL_ARRAY", "DatasetManifest", "InspectedModel", "InvalidUpload", "ModelSignature", "TensorSpec",
           "bind_inputs", "adds_channel_dim", "inspect_dataset", "inspect_model", "inspect_npz", "inspect_pt2"]
MODEL_KINDS = ("pt2", "hf_folder")


def inspect_pt2(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS) -> ModelSignature:
    """The signature of the program in `source`, which must pass every archive rule."""
    return read_pt2(source, limits).signature


@dataclass
class InspectedModel:
    kind: str  # "pt2" or "hf_folder"
    signature: dict  # ModelSignature JSON (for a folder: of the program the worker exports, plus "hf")
    task: str | None = None  # a folder's task


def inspect_model(source: BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS, task: str | None = None
                  ) -> InspectedModel:
    """A `.pt2`, or a Hugging Face folder as a `.zip`/`.tar`, told apart by content (never by file name): a tar,
    or a zip holding a `config.json` or `*.safetensors` and no `archive_format` (the `.pt2` marker), is a
    folder."""
    if _is_hf_folder(source, limits):
        folder = read_hf_folder(source, limits, task)
        return InspectedModel("hf_folder", folder.signature(), folder.task)
    if task is not None:
        raise InvalidUpload("a task is given only with a Hugging Face folder upload; a .pt2 program's outputs "
                            "are what it computes")
    archive = read_pt2(source, limits)
    _refuse_quantized(archive.program)
    return InspectedModel("pt2", archive.signature.to_json())


# Namespaces whose operators only a quantization flow writes (torchao's pt2e convert, its quantize_ API)
QUANTIZED_NAMESPACES = ("torch.ops.quantized_decomposed.", "torch.ops.torchao.")


def _refuse_quantized(program: dict) -> None:
    """An already quantized program (a stage's int8 `.pt2` uploaded again) is refused: quantizing it once more
    wrote a larger program and reported success (0.95x, no warning), and pruning or factorising its int8 weights
    has nothing to work on. QAT's fake quantization (aten ops on float weights) is a float program and passes."""
    quantized = sorted({target.rsplit(".", 1)[0] for target in called_operators(program)
                        if target.startswith(QUANTIZED_NAMESPACES)})
    if quantized:
        shown = ", ".join(name.removeprefix("torch.ops.") for name in quantized[:3])
        raise InvalidUpload(f"the program is already quantized (it calls {shown}): modelpress compresses float "
                            "programs; upload the model exported before quantization")


def _is_hf_folder(source: BinaryIO, limits: ArchiveLimits) -> bool:
    if is_tar(source):
        return True
    position = source.tell()
    try:
        with BoundedZip(source, limits, "the model") as archive:
            names = list(archive.members)
    except (NotAZip, InvalidUpload):
        return False  # the .pt2 reader words what is wrong with it
    finally:
        source.seek(position)
    if any(name.rsplit("/", 1)[-1] == "archive_format" for name in names):
        return False  # torch.export.save's marker (a program may carry a config.json among its extra files)
    # A folder zipped at the wrong depth still reads as a folder, so the message says where config.json belongs.
    return any(name.rsplit("/", 1)[-1] == "config.json" or name.endswith(".safetensors") for name in names)


@dataclass
class DatasetManifest:
    """Per split, the arrays it holds: {"train": {"x": {"shape": [...], "dtype": "float32"}, "y": ...}}."""

    splits: dict[str, dict[str, dict]]
    # split -> [min, max] of its labels: integers for classes, floats for values (regression; the y entry says "values")
    label_range: dict[str, list[int | float]] = field(default_factory=dict)
    format: str = "npz"  # or "jsonl": rows of text, tokenized in the worker with the model folder's tokenizer

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "DatasetManifest":
        return cls(data["splits"], data.get("label_range", {}), data.get("format", "npz"))

    def inputs(self, split: str) -> dict[str, dict]:
        return {k: v for k, v in self.splits[split].items() if k not in NOT_INPUTS}

    def has_labels(self, split: str) -> bool:
        return LABEL_ARRAY in self.splits.get(split, {})


def inspect_npz(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS) -> DatasetManifest:
    """Read array headers and scan labels in chunks (never the whole data) so memory does not grow with the file."""
    contents = read_npz(source, limits)
    return DatasetManifest(contents.splits, contents.label_range)


def inspect_dataset(source: BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS) -> DatasetManifest:
    """An `.npz`, or a `.jsonl` text dataset (`compression.archive.jsonl`), told apart by content."""
    if looks_like_jsonl(source):
        splits, label_range = manifest_splits(read_jsonl(source, limits))
        return DatasetManifest(splits, label_range, "jsonl")
    kind = describe_dataset_bytes(peek(source))
    if kind:
        raise InvalidUpload(f"{kind}; a dataset is an .npz of arrays named <split>.<input> (numpy.savez), or a .jsonl "
                            'text file with one {"split": ..., "text": ..., "label": ...} object per line')
    return inspect_npz(source, limits)


def bind_inputs(model_inputs: list[str], arrays: list[str], split: str) -> dict[str, str]:
    """Map each model input to the dataset array that feeds it.

    A single-input model takes the split's only array besides its labels and transcripts whatever its name; a model
    with several inputs takes the arrays named like its forward arguments (`train.input_ids` feeds `input_ids`).
    """
    candidates = [a for a in arrays if a not in NOT_INPUTS]
    if len(model_inputs) == 1 and len(candidates) == 1:
        return {model_inputs[0]: candidates[0]}
    missing = [name for name in model_inputs if name not in candidates]
    if missing:
        raise InvalidUpload(f"split '{split}' has no array for model input(s) {missing}; name the arrays "
                            f"'{split}.<input>' after the model's inputs {model_inputs} (found {candidates})")
    return {name: name for name in model_inputs}


def adds_channel_dim(shape: list[int] | tuple[int, ...], wanted: list[int | None]) -> bool:
    """Whether an array of `shape` fits a model input of shape `wanted` (None: dynamic) once the size-1 channel
    dimension it lacks is inserted after the batch: grayscale images [N, H, W] for [N, 1, H, W], signals [N, L]
    for [N, 1, L]. The only reading of such an array, so the dataset loader inserts the dimension."""
    return (len(wanted) >= 3 and len(shape) + 1 == len(wanted) and wanted[1] == 1
            and all(want is None or want == got for got, want in zip(shape[1:], wanted[2:])))
