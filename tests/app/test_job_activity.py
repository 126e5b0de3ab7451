"""A job's log and its event stream, through the API: what the worker wrote, as the user reads it."""

import json
import threading

from sqlalchemy import update


def _submit(api, auth, uploaded) -> str:
    response = api.post("/v1/jobs", headers=auth, json={"model_id": uploaded["model"]["id"],
                                                         "dataset_id": uploaded["dataset"]["id"],
                                                         "stages": [{"method": "ptq"}]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _write_log(job_id: str, messages: list[str], settings) -> None:
    from worker.joblog import JobLogWriter
    writer = JobLogWriter(job_id, settings)
    for message in messages:
        writer.add("INFO", "worker", message)
    writer.flush()


def _finish(job_id: str, status: str = "succeeded") -> None:
    from core.db.models import Job, utcnow
    from core.db.session import session_scope
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            status=status, finished_at=utcnow(), metrics={"final": {"accuracy": 0.97}},
            progress={"phase": "done", "step": 1, "total": 1, "fraction": 1.0, "overall": 1.0}))


def _events(api, auth, job_id, **headers) -> list[tuple[str, str, dict]]:
    response = api.get(f"/v1/jobs/{job_id}/events", headers={**auth, **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return events


def test_logs_are_paged_after_a_seq_and_private_to_the_tenant(api, auth, uploaded, settings):
    job_id = _submit(api, auth, uploaded)
    _write_log(job_id, [f"line {i}" for i in range(5)], settings)
    first = api.get(f"/v1/jobs/{job_id}/logs", headers=auth, params={"limit": 3}).json()
    assert [line["message"] for line in first["items"]] == ["line 0", "line 1", "line 2"]
    rest = api.get(f"/v1/jobs/{job_id}/logs", headers=auth, params={"after": first["next_after"]}).json()
    assert [line["seq"] for line in rest["items"]] == [4, 5] and rest["next_after"] == 5
    assert api.get(f"/v1/jobs/{job_id}/logs", headers=auth, params={"after": 5}).json() == {"items": [],
                                                                                          "next_after": 5}
    from tests.app.conftest import new_key
    other = api.get(f"/v1/jobs/{job_id}/logs", headers={"Authorization": f"Bearer {new_key()}"})
    assert other.status_code == 404 and other.json()["error"] == "not_found"
    assert api.get(f"/v1/jobs/{job_id}/logs", headers=auth, params={"limit": 0}).status_code == 422


def test_the_log_is_bounded_and_keeps_no_server_paths(job_id, settings):
    from sqlalchemy import select

    from core.db.models import JobLog
    from core.db.session import session_scope
    from worker.joblog import JobLogWriter
    bounded = settings.model_copy(update={"job_log_max_lines": 10})
    writer = JobLogWriter(job_id, bounded)
    scratch = settings.sandbox_scratch_dir / "job_x"
    writer.use_scratch(bounded, scratch)
    writer.add("ERROR", "job", f'File "{scratch}/work/model.py", line 3\nFile "/opt/elsewhere/lib/x.py", line 9\n'
                               f"db at {settings.resolved_database_url}")
    for i in range(20):
        writer.add("INFO", "job", f"line {i}")
    writer.flush()
    with session_scope() as session:
        lines = session.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.seq)).all()
    assert len(lines) == 10 and "log limit of 10 lines" in lines[-1].message
    assert 'File "<job>/work/model.py"' in lines[0].message and 'File "x.py"' in lines[0].message
    assert str(scratch) not in lines[0].message and settings.resolved_database_url not in lines[0].message


def test_events_follow_the_job_to_its_end_and_resume_after_the_last_id(api, auth, uploaded, settings):
    job_id = _submit(api, auth, uploaded)
    _write_log(job_id, ["attempt 1 started"], settings)
    # The stream is open while the job moves on: it must see the change, then end by itself.
    timer = threading.Timer(0.8, lambda: (_write_log(job_id, ["stage 0:ptq: calibrate"], settings),
                                          _finish(job_id)))
    timer.start()
    events = _events(api, auth, job_id)
    timer.join()
    kinds = [kind for _, kind, _ in events]
    assert kinds[0] == "status" and events[0][2]["status"] == "queued"
    assert [data["status"] for _, kind, data in events if kind == "status"] == ["queued", "succeeded"]
    assert [data["message"] for _, kind, data in events if kind == "log"] == ["attempt 1 started",
                                                                             "stage 0:ptq: calibrate"]
    assert kinds[-1] == "end" and events[-1][2]["metrics"]["final"]["accuracy"] == 0.97
    assert any(kind == "progress" and data["overall"] == 1.0 for _, kind, data in events)
    assert events[-1][0] == "2"  # the id is the last log line's seq

    resumed = _events(api, auth, job_id, **{"Last-Event-ID": "1"})
    assert [data["message"] for _, kind, data in resumed if kind == "log"] == ["stage 0:ptq: calibrate"]
    bad = api.get(f"/v1/jobs/{job_id}/events", headers={**auth, "Last-Event-ID": "x"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
    assert api.get("/v1/jobs/job_0000000000000000/events", headers=auth).status_code == 404
