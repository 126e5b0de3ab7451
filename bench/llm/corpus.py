"""An offline English text corpus from what ships with every CPython: the reference topics behind `help()`
(`pydoc_data.topics`) and the docstrings of the standard library's modules, classes and functions.

Nothing is downloaded. Documents are sorted by name so the corpus (and the split) is the same on every machine
with the same Python; the last `test_fraction` of documents is held out for perplexity.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

SKIPPED_PARTS = {"test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__"}


def _stdlib_docstrings() -> dict[str, str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    documents = {}
    for path in sorted(root.rglob("*.py")):
        if SKIPPED_PARTS & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        texts = [ast.get_docstring(node, clean=True) for node in ast.walk(tree)
                 if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        text = "\n\n".join(t for t in texts if t and len(t) > 40)
        if text:
            documents[f"stdlib:{path.relative_to(root)}"] = text
    return documents


def _pydoc_topics() -> dict[str, str]:
    from pydoc_data.topics import topics
    return {f"pydoc:{name}": text for name, text in sorted(topics.items())}


def documents() -> list[tuple[str, str]]:
    return sorted({**_pydoc_topics(), **_stdlib_docstrings()}.items())


def split(test_fraction: float = 0.1) -> tuple[str, str]:
    """(train text, test text): whole documents, the test split every 1/test_fraction-th document so both
    splits mix reference topics and docstrings."""
    every = round(1 / test_fraction)
    docs = documents()
    train = [text for i, (_, text) in enumerate(docs) if i % every != every - 1]
    test = [text for i, (_, text) in enumerate(docs) if i % every == every - 1]
    return "\n\n".join(train), "\n\n".join(test)
