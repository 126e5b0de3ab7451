"""The SDK against the real API (in process, on the test database): typed results, typed errors, events."""

import io
import threading

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from modelpress import PTQ, QAT, Client, Training
from modelpress.errors import Conflict, InvalidInput, NotFound, Unauthorized


def _in_process(api, headers: dict) -> Client:
    """The SDK sending through the API's test client: its HTTP calls reach the real app and database."""
    from fastapi.testclient import TestClient
    return Client(http=TestClient(api.app, headers=headers))


@pytest.fixture
def sdk(api, auth) -> Client:
    with _in_process(api, auth) as client:
        yield client


@pytest.fixture
def uploads(sdk, example_files):
    return sdk.upload_model(example_files[0]), sdk.upload_dataset(example_files[1])


def _finish(job_id: str, artifact_bytes: bytes | None = None) -> None:
    """What a worker would leave: a succeeded job with metrics and (optionally) its model artifact."""
    from core.db.models import Artifact, Job, utcnow
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    metrics = {"baseline": {"accuracy": 0.98, "size_bytes": 1000, "latency_ms": {"1": 2.0}},
               "final": {"accuracy": 0.97, "size_bytes": 250, "compression_ratio": 4.0, "latency_ms": {"1": 1.0},
                         "speedup": {"1": 2.0}, "model_artifact": "model.pt2"}}
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            status="succeeded", started_at=utcnow(), finished_at=utcnow(), metrics=metrics,
            progress={"phase": "done", "step": 1, "total": 1, "fraction": 1.0, "overall": 1.0}))
        if artifact_bytes is not None:
            job = session.get(Job, job_id)
            blob = write_blob(session, job.tenant_id, io.BytesIO(artifact_bytes))
            session.add(Artifact(tenant_id=job.tenant_id, job_id=job_id, stage_index=0, name="model.pt2",
                                 kind="model.pt2", blob_id=blob.id, size_bytes=blob.size_bytes, sha256=blob.sha256))


def test_submit_list_cancel_and_typed_errors(api, sdk, uploads):
    model, data = uploads
    assert model.id.startswith("mdl_") and model.info["signature"]
    # Asked of a GPU worker, which no test starts: the job stays queued even while another test's worker runs.
    job = sdk.submit(model, data, stages=[PTQ(calibration_samples=64)], seed=3, resources={"device": "gpu"})
    assert job.status == "queued" and job.methods == ["ptq"] and job.spec["seed"] == 3
    assert job.id in [j.id for j in sdk.jobs(status="queued")]
    assert job.cancel().status == "cancelled"
    assert job.wait().status == "cancelled"  # already finished: returns at once
    with pytest.raises(Conflict) as conflict:
        job.cancel()
    assert conflict.value.error == "conflict" and "already cancelled" in conflict.value.detail

    with pytest.raises(ValidationError):  # refused before anything is sent
        sdk.submit(model, data, stages=[QAT(weight_bits=1)])
    with pytest.raises(InvalidInput) as invalid:
        sdk.submit(model, "ds_0000000000000000", stages=[PTQ()])
    assert invalid.value.status_code == 422 and "dataset_id" in invalid.value.detail
    with pytest.raises(NotFound):
        sdk.get_job("job_0000000000000000")
    with _in_process(api, {"Authorization": "Bearer mp_not-a-key"}) as stranger:
        with pytest.raises(Unauthorized, match="unknown or revoked"):
            stranger.jobs()


def test_wait_follows_the_event_stream_then_download_and_compare(sdk, uploads, settings, tmp_path):
    model, data = uploads
    # A GPU job no test's worker takes: the job is finished below by the stand-in for a worker.
    job = sdk.submit(model, data, stages=[QAT(weight_bits=4, training=Training(steps=10, warmup_steps=0))],
                     resources={"device": "gpu"})
    from worker.joblog import JobLogWriter
    writer = JobLogWriter(job.id, settings)
    writer.add("INFO", "progress", "stage 0:qat: train (10 steps)")
    writer.flush()
    timer = threading.Timer(0.6, _finish, (job.id, b"int8 model bytes"))
    timer.start()
    seen, shown = [], io.StringIO()
    job.wait(progress=shown, on_update=lambda j: seen.append(j.status), timeout=60)
    timer.join()
    assert job.status == "succeeded" and seen[0] == "queued" and seen[-1] == "succeeded"
    assert "100%" in shown.getvalue() and job.metrics["final"]["accuracy"] == 0.97
    assert [line["message"] for line in job.logs()] == ["stage 0:qat: train (10 steps)"]

    [path] = job.download(tmp_path / "out")
    assert path.read_bytes() == b"int8 model bytes" and path.name == "model.pt2"
    [row] = sdk.compare([job]).rows
    assert (row.metric, row.baseline, row.value, row.size_bytes, row.speedup) == ("accuracy", 0.98, 0.97, 250, 2.0)
    assert "| qat |" in sdk.compare([job.id]).table()


def test_a_hugging_face_folder_is_uploaded_from_its_directory(sdk, tmp_path, capsys):
    """`upload_model("my-bert/")`: the directory save_pretrained (or `hf download --local-dir`) wrote, zipped by the
    SDK without its hidden download state or git metadata, which the API would refuse as subfolders."""
    from modelpress.folders import folder_files
    from tests.hf_folders import bert_folder

    folder = bert_folder(tmp_path / "my-bert")
    (folder / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download" / "model.safetensors.metadata").write_text("etag")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs")
    assert {p.relative_to(folder).as_posix() for p in folder_files(folder)} == \
        {p.name for p in folder.iterdir() if p.is_file()}
    # A Hub snapshot's other copies of the weights and its scripts, which the API refuses, are left out and named.
    snapshot_extras = {"pytorch_model.bin": b"\x80\x04", "tf_model.h5": b"HDF", "flax_model.msgpack": b"\x00",
                       "rust_model.ot": b"\x00", "pytorch_model.bin.index.json": b"{}", "train_script.py": b"",
                       "onnx/model.onnx": b"\x08", "openvino/openvino_model.xml": b"<net/>"}
    for name, data in snapshot_extras.items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)

    upload = sdk.upload_model(folder, task="feature-extraction")
    assert upload.name == "my-bert.zip" and upload.info["kind"] == "hf_folder"
    assert upload.info["task"] == "feature-extraction"
    assert set(upload.left_out) == {name for name in snapshot_extras if "/" not in name} | {"onnx/", "openvino/"}
    resumed = sdk.upload_resumable(folder, "model", task="feature-extraction")
    assert resumed.sha256 == upload.sha256 and resumed.left_out == upload.left_out  # the same zip, byte for byte
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no files"):
        sdk.upload_model(empty)

    # The CLI's `modelpress submit my-bert/ text.jsonl --task feature-extraction` uploads the same way.
    from modelpress.cli import build_parser
    from modelpress.job_commands import _upload_or_id
    args = build_parser().parse_args(["submit", str(folder), "text.jsonl", "--method", "ptq",
                                      "--task", "feature-extraction"])
    assert _upload_or_id(sdk, args.model, "model", args.task).sha256 == upload.sha256
    assert "left out flax_model.msgpack, onnx/, openvino/, pytorch_model.bin" in capsys.readouterr().err


def test_the_quality_figure_is_the_metric_the_job_names():
    from modelpress.compare import quality_metric

    regression = {"metric": "label_spearman", "label_spearman": 0.91, "score_spearman": 0.99, "cosine": 0.9}
    assert quality_metric(regression) == "label_spearman"
    assert quality_metric({"metric": "similarity_spearman", "similarity_spearman": 0.98, "cosine": 0.99}) \
        == "similarity_spearman"
    assert quality_metric({"accuracy": 0.9, "cosine": 0.99}) == "accuracy"  # a job from before jobs named it
    assert quality_metric({"metric": "accuracy"}) is None  # named but not measured
