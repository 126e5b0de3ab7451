"""The client installs and imports without the service: httpx and pydantic only, never torch."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_MODULES = ("torch", "numpy", "fastapi", "sqlalchemy", "celery", "kombu", "alembic", "pydantic_settings",
                  "app", "worker")


def test_the_distribution_depends_on_httpx_and_pydantic_only():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dependency.split(">")[0].split("=")[0].split("[")[0].strip() for dependency in project["dependencies"]}
    assert names == {"httpx", "pydantic"}
    server = " ".join(project["optional-dependencies"]["server"])
    assert "torch==2.13.0" in server and "fastapi" in server and "sqlalchemy" in server


def test_importing_the_sdk_and_cli_loads_nothing_of_the_server():
    code = ("import sys, modelpress, modelpress.client, modelpress.cli; from modelpress import Client, PTQ; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))")
    result = subprocess.run([sys.executable, "-c", code, *SERVER_MODULES], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_every_example_builds_a_spec_the_api_accepts(monkeypatch):
    import importlib.util

    from core.jobs.spec import JobCreate
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # for their `common`
    examples = sorted(path for path in (ROOT / "examples").glob("*.py") if path.stem != "common")
    assert len(examples) >= 9
    methods = set()
    for path in examples:
        # Loaded from their files under their own names: `qat`, `kd`, ... also name test packages on sys.path.
        loader = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
        example = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(example)
        stages = example.stages()
        spec = JobCreate.model_validate({"model_id": "mdl_x", "dataset_id": "ds_x", "stages": stages})
        methods.update(stage.method for stage in spec.stages)
    from compression.specs import METHODS
    assert methods == set(METHODS)  # an example for every method
