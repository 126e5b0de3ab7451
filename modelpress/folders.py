"""A Hugging Face model folder (what `save_pretrained` or `hf download --local-dir` writes) sent as the zip the API
takes, so `upload_model("my-bert/")` works like uploading `my-bert.zip`.

Hidden directories are left out: `hf download --local-dir` keeps its download state in `.cache/huggingface/`, a
clone keeps `.git/`, and the API refuses any subfolder it does not read (sentence-transformers' `1_Pooling/` and
other module folders are kept). Weights are stored, not deflated: safetensors hardly compress, and storing is as
fast as copying.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def folder_files(folder: Path) -> list[Path]:
    """The folder's files, sorted, without hidden directories and what they hold."""
    found = []
    for directory, subdirectories, files in os.walk(folder):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        found += [Path(directory) / name for name in sorted(files)]
    return found


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
