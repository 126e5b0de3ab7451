"""docker-compose.yml cannot run here (no Docker engine), so check that it is complete and consistent."""

from pathlib import Path

import yaml

from modelpress.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_their_wiring():
    services = _compose()["services"]
    assert {"postgres", "redis", "minio", "migrate", "api", "worker", "worker-cpu"} <= set(services)
    for name in ("postgres", "redis", "minio", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["MODELPRESS_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["MODELPRESS_BROKER_URL"].startswith("redis://")
        # Uploads and artifacts go to MinIO, with the credentials MinIO was started with.
        assert env["MODELPRESS_STORE_URL"].startswith("s3://")
        assert env["MODELPRESS_STORE_S3_ENDPOINT_URL"] == "http://minio:9000"
        minio = services["minio"]["environment"]
        assert (env["MODELPRESS_STORE_S3_ACCESS_KEY_ID"], env["MODELPRESS_STORE_S3_SECRET_ACCESS_KEY"]) == (
            minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert services["migrate"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "miniodata" in _compose()["volumes"]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "cpu" in services["worker-cpu"]["profiles"]
    assert services["postgres"]["volumes"] and "pgdata" in _compose()["volumes"]


def test_commands_exist_in_the_project():
    parser = build_parser()
    for name, service in _compose()["services"].items():
        command = service.get("command")
        if command and command[0] == "modelpress":
            parser.parse_args(command[1:])  # exits (fails the test) on an unknown command or option
    assert (ROOT / "Dockerfile").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for copied in ("app", "worker", "compression", "migrations", "alembic.ini", "pyproject.toml"):
        assert f"COPY {copied}" in dockerfile or f" {copied} " in dockerfile, copied
        assert (ROOT / copied).exists(), copied


def test_the_image_holds_every_package_the_project_installs():
    """The image installs the project from its sources: a package left out of the COPY lines is missing at run
    time (`modelpress` and `core` once were)."""
    import re
    import tomllib
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in patterns}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), flags=re.M))
    assert packages <= copied, f"Dockerfile does not COPY {sorted(packages - copied)}"
