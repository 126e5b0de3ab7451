"""The command line against a real API and worker: submit, follow the event stream, download, read the job's log."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def _cli(service, key, *argv, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODELPRESS_URL": service.base_url, "MODELPRESS_API_KEY": key,
           "MODELPRESS_CONFIG": os.devnull}
    return subprocess.run([sys.executable, "-m", "modelpress.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_submit_wait_download_and_logs(service, client, example_files, tmp_path):
    key = client.http.headers["Authorization"].split()[1]
    model, data = map(str, example_files)
    submitted = _cli(service, key, "submit", model, data, "--method", "ptq", "--set", "calibration_samples=64",
                     "--set", "evaluation.latency=false",
                     "--set", "evaluation.max_samples=200", "--download", str(tmp_path / "out"))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.split()[0]
    # Followed over the event stream: overall progress across the baseline and the stage reached 100 %.
    assert "succeeded" in submitted.stderr and "100%" in submitted.stderr, submitted.stderr
    [downloaded] = (tmp_path / "out").iterdir()  # the final model only: the default int8 recipe's .pt2
    assert downloaded.name == "model_int8.pt2" and downloaded.stat().st_size > 0
    assert f"downloaded {downloaded} (sha256 verified)" in submitted.stderr

    logs = _cli(service, key, "logs", job_id)
    assert logs.returncode == 0, logs.stderr
    for expected in ("attempt 1 started", "inputs fetched; running 1 stage(s): ptq", "stage 0:ptq: calibrate",
                     "job succeeded"):
        assert expected in logs.stdout, logs.stdout
    assert "/tmp/" not in logs.stdout and str(service.env["MODELPRESS_DATA_DIR"]) not in logs.stdout

    shown = _cli(service, key, "show", job_id)
    assert shown.returncode == 0 and downloaded.name in shown.stdout
    assert _cli(service, key, "cancel", job_id).returncode == 3  # already finished: the API's 409
