"""A real API process and a real worker process on the test backend, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from modelpress.client import Client
from modelpress.demo import _free_port, wait_ready

FAST_RECOVERY = {"MODELPRESS_STALE_AFTER_S": "4", "MODELPRESS_HEARTBEAT_INTERVAL_S": "0.5",
                 "MODELPRESS_PROGRESS_INTERVAL_S": "0.1",
                 # The tests' webhook receivers listen on 127.0.0.1.
                 "MODELPRESS_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"}


class Service:
    def __init__(self, data_dir, log_path):
        # Scratch directories under the data dir: what a killed worker leaves goes with the test's temp files.
        self.env = {**os.environ, **FAST_RECOVERY, "MODELPRESS_DATA_DIR": str(data_dir),
                    "MODELPRESS_SANDBOX_SCRATCH_DIR": str(data_dir / "scratch")}
        self.log = open(log_path, "ab")
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api = self._spawn("api", "--port", str(self.port))
        self.worker = self.start_worker()

    def _spawn(self, *args) -> subprocess.Popen:
        # Own session: the worker's pool children are killed with it as a group.
        return subprocess.Popen([sys.executable, "-m", "modelpress.cli", *args], env=self.env, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self) -> subprocess.Popen:
        self.worker = self._spawn("worker", "--name", f"e2e-{_free_port()}@%h")
        return self.worker

    def kill_worker(self) -> None:
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop(self) -> None:
        for process in (self.api, self.worker):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (self.api, self.worker):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.log.close()


def _start_from_an_empty_queue() -> None:
    """API tests submit jobs no worker was meant to run. Each job is a fresh sandboxed process that imports torch,
    so a worker that ran that backlog first would keep the tests below waiting for minutes."""
    from sqlalchemy import update

    from core.db.models import Job, utcnow
    from core.db.session import session_scope
    from core.queue import get_celery
    with session_scope() as session:
        session.execute(update(Job).where(Job.status == "queued").values(
            status="cancelled", finished_at=utcnow(), error_code="cancelled",
            error_message="left queued by an earlier test"))
    get_celery().control.purge()


@pytest.fixture(scope="session")
def service(backend, tmp_path_factory):
    _start_from_an_empty_queue()
    running = Service(backend.data_dir, tmp_path_factory.mktemp("logs") / f"service-{backend.name}.log")
    try:
        wait_ready(running.base_url, processes=[running.api, running.worker])
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client(service) -> Client:
    from tests.app.conftest import new_key
    return Client(service.base_url, new_key())


@pytest.fixture(scope="session")
def uploads(client, example_files) -> dict:
    model_path, dataset_path = example_files
    return {"model": client.upload_model(model_path).info, "dataset": client.upload_dataset(dataset_path).info}


@pytest.fixture(scope="session")
def cli(service, client):
    """cli(*argv) runs the `modelpress` command against the service with the client's key."""
    env = {**os.environ, "MODELPRESS_URL": service.base_url, "MODELPRESS_CONFIG": os.devnull,
           "MODELPRESS_API_KEY": client.http.headers["Authorization"].split()[1]}

    def run(*argv, timeout=300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "modelpress.cli", *argv], env=env, capture_output=True,
                              text=True, timeout=timeout)
    return run


@pytest.fixture
def fresh_tenant(service, example_files):
    """A new tenant with its own key, holding the example model and dataset (uploaded over HTTP)."""
    from tests.app.conftest import new_key
    key = new_key()
    model_path, dataset_path = example_files
    with httpx.Client(base_url=service.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        ids = {}
        for route, path in (("/v1/models", model_path), ("/v1/datasets", dataset_path)):
            with open(path, "rb") as file:
                response = http.post(route, files={"file": (path.name, file)})
            assert response.status_code == 201, response.text
            ids[route] = response.json()["id"]
    return {"key": key, "model": ids["/v1/models"], "dataset": ids["/v1/datasets"]}
