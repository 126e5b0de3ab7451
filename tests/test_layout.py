"""The packages depend on each other in one direction only: app/ and worker/ on core/, everything on compression/.

core/ is shared infrastructure (settings, database, store, queue, job state); if it imported app/ or worker/, or
the library imported any service package, a newcomer could no longer tell where a thing belongs."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"compression": {"app", "core", "worker"}, "core": {"app", "worker"}, "worker": {"app"},
             "app": {"worker"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_the_packages_below_it(package):
    offenders = {str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
                 for path in (ROOT / package).rglob("*.py")}
    assert {path: found for path, found in offenders.items() if found} == {}
