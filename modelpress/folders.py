"""A Hugging Face model folder (what `save_pretrained` or `hf download --local-dir` writes) sent as the zip the API
takes, so `upload_model("my-bert/")` works like uploading `my-bert.zip`.

Hidden directories are left out: `hf download --local-dir` keeps its download state in `.cache/huggingface/`, a
clone keeps `.git/`, and the API refuses any subfolder it does not read (sentence-transformers' `1_Pooling/` and
other module folders are kept). So are, where the folder has safetensors weights, the other copies of the weights a
Hub snapshot carries beside them (`pytorch_model.bin`, `tf_model.h5`, `flax_model.msgpack`, `rust_model.ot`,
`onnx/`, `openvino/`, ...) and its Python scripts (`train_script.py`): the API never reads them (it refuses
pickles and code outright), and a snapshot as downloaded would otherwise be refused for them. The upload says what
was left out (`Upload.left_out`). Weights are stored, not deflated: safetensors hardly compress, and storing is as
fast as copying.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# What a Hub snapshot holds besides its safetensors: the same weights for other frameworks or as pickles, their
# shard indexes, exports to other runtimes, and scripts.
OTHER_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data",
                         ".tflite", ".gguf", ".mlmodel", ".py")
OTHER_WEIGHT_INDEX = re.compile(r".*\.(bin|h5|msgpack)\.index\.json$")
OTHER_RUNTIME_FOLDERS = ("onnx", "openvino", "coreml", "tflite")


def folder_files(folder: Path) -> list[Path]:
    """The folder's files to upload, sorted: without hidden directories, and where it has safetensors weights at
    its top, without the other copies of them (`left_out`)."""
    return _walk(folder)[0]


def left_out(folder: Path) -> list[str]:
    """The folder's files and subfolders (relative, folders with a trailing /) `folder_files` leaves out, hidden
    directories aside."""
    return _walk(folder)[1]


def _walk(folder: Path) -> tuple[list[Path], list[str]]:
    snapshot = any(True for _ in folder.glob("*.safetensors"))
    found, skipped = [], []
    for directory, subdirectories, files in os.walk(folder):
        top = Path(directory) == folder
        kept = []
        for name in sorted(subdirectories):
            if name.startswith("."):
                continue
            if snapshot and top and name in OTHER_RUNTIME_FOLDERS:
                skipped.append(f"{name}/")
            else:
                kept.append(name)
        subdirectories[:] = kept
        for name in sorted(files):
            if snapshot and top and (name.lower().endswith(OTHER_WEIGHT_SUFFIXES) or OTHER_WEIGHT_INDEX.match(name)):
                skipped.append(name)
            else:
                found.append(Path(directory) / name)
    return found, sorted(skipped)


@contextmanager
def zipped_folder(folder: str | Path) -> Iterator[Path]:
    """A temporary `<folder name>.zip` of the folder's files (paths relative to it), deleted afterwards."""
    folder = Path(folder)
    files = folder_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder} holds no files to upload")
    with tempfile.TemporaryDirectory(prefix="modelpress-upload-") as scratch:
        archive = Path(scratch) / f"{folder.resolve().name or 'model'}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
            for path in files:
                out.write(path, path.relative_to(folder).as_posix())
        yield archive


@contextmanager
def upload_file(path: str | Path) -> Iterator[Path]:
    """`path` itself for a file; for a directory, the zip of it."""
    path = Path(path)
    if path.is_dir():
        with zipped_folder(path) as archive:
            yield archive
    else:
        yield path
