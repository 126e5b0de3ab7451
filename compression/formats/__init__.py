"""Every kind of file a method hands the user: its one name, one loader and a recipe that loads it in a fresh
process with only the packages it lists.

Each module here describes one kind: `KIND` (the artifact kind the API shows), `PACKAGES` (what the recipe needs
installed), `RECIPE` (Python source; `{path}` is the downloaded file's path), `write` (the writer every method
uses) and `load` (the loader the recipe calls, or an equivalent). `artifact()` is how methods create an
`Artifact`: its metadata carries the format's name, packages and recipe, so a user reading the job's artifacts
knows how to use each file. A test runs every recipe in a fresh interpreter.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from compression.result import Artifact

_MODULES = {
    "model.pt2": "compression.formats.pt2",
    "model.onnx": "compression.formats.onnx_qdq",
    "model.aoti.pt2": "compression.formats.aoti",
    "packed.safetensors": "compression.formats.packed",
    "packed.codebook.safetensors": "compression.formats.codebook",
    "packed.ipq.safetensors": "compression.formats.ipq",
    "sparse.safetensors": "compression.formats.sparse",
    "model.hf_folder": "compression.formats.hf_folder",
}
KINDS = tuple(_MODULES)


def format_of(kind: str) -> ModuleType:
    try:
        return importlib.import_module(_MODULES[kind])
    except KeyError:
        raise ValueError(f"unknown artifact kind '{kind}'; known: {list(_MODULES)}") from None


def recipe(kind: str, path: str) -> str:
    """The Python source that loads the file of `kind` at `path` in a fresh process."""
    return format_of(kind).RECIPE.format(path=path)


def artifact(kind: str, name: str, path: Path, **metadata) -> Artifact:
    """An `Artifact` whose metadata says what the file is and how to load it (format, packages, recipe)."""
    fmt = format_of(kind)
    described = {"format": fmt.DESCRIPTION, "packages": list(fmt.PACKAGES), "recipe": recipe(kind, name)}
    return Artifact(name, Path(path), kind, {**described, **metadata})


def load(kind: str, path: str | Path):
    """Load a file of `kind` with its format's loader (what its recipe does)."""
    return format_of(kind).load(path)
