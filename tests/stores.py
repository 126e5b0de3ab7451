"""The stores tests run against: the local file store always, and a real S3-protocol server (moto in server
mode, a separate process on a free port) for the tests that take the `store` fixture."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx

from modelpress.demo import _free_port

BUCKET = "modelpress-test"


class MotoServer:
    def __init__(self):
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                         str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=2)
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)

    def env(self, prefix: str) -> dict[str, str]:
        return {"MODELPRESS_STORE_URL": f"s3://{BUCKET}/{prefix}", "MODELPRESS_STORE_S3_ENDPOINT_URL": self.endpoint,
                "MODELPRESS_STORE_S3_ACCESS_KEY_ID": "test", "MODELPRESS_STORE_S3_SECRET_ACCESS_KEY": "test",
                "MODELPRESS_STORE_S3_REGION": "us-east-1"}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@contextmanager
def environment(values: dict[str, str]):
    """Point the service code at other settings (and a fresh store) for the duration."""
    from tests.backends import clear_service_caches
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    clear_service_caches(keep_engine=True)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_service_caches(keep_engine=True)
