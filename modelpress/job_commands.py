"""The commands a user runs against a service: submit, jobs, show, wait, cancel, download, logs. They need the
SDK only (httpx and pydantic)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.jobs.spec import JobCreate
from modelpress.client import Client, Upload
from modelpress.compare import quality_metric
from modelpress.jobs import Job
from modelpress.progress import overall

# --set keys that belong to the job rather than to its stage.
JOB_FIELDS = ("evaluation", "train_split", "time_limit_s", "seed")
ID_PREFIXES = {"model": "mdl_", "dataset": "ds_"}


class UsageError(ValueError):
    """A command line that cannot work (exit status 2)."""


def client_for(args) -> Client:
    return Client(getattr(args, "url", None), getattr(args, "api_key", None))


def parse_value(text: str):
    """`--set` values are JSON where they parse as JSON (numbers, true/false, null, lists), else strings."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_setting(target: dict, assignment: str) -> None:
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {assignment!r}: write key=value (dotted keys reach nested fields: "
                         "training.steps=200)")
    *parents, leaf = key.strip().split(".")
    for name in parents:
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise UsageError(f"--set {assignment!r}: {name} is not a group of fields")
    target[leaf] = parse_value(value)


def build_spec(args) -> dict:
    """The job fields from --spec (a JSON job spec without model and dataset), --method and --set."""
    spec: dict = {}
    if args.spec:
        try:
            spec = json.loads(Path(args.spec).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--spec {args.spec}: {exc}") from None
        if not isinstance(spec, dict):
            raise UsageError(f"--spec {args.spec}: expected a JSON object with stages (and evaluation, ...)")
    if args.method:
        spec["stages"] = [{"method": method} for method in args.method]
    if not spec.get("stages"):
        raise UsageError("give --method (e.g. --method ptq) or a --spec file with stages")
    for assignment in args.set or []:
        is_job_field = assignment.split("=", 1)[0].split(".")[0] in JOB_FIELDS
        apply_setting(spec if is_job_field else spec["stages"][-1], assignment)
    return spec


def _upload_or_id(client: Client, value: str, kind: str, task: str | None = None) -> Upload | Job | str:
    """A file (or, for the model, a Hugging Face folder's directory) is uploaded; an id is used as it is; a job id
    (for the model) starts from that job's result."""
    if Path(value).is_file() or (kind == "model" and Path(value).is_dir()):
        upload = client.upload_model(value, task=task) if kind == "model" else client.upload_dataset(value)
        print(f"uploaded {kind} {value}: {upload.id} ({upload.size_bytes:,} bytes)", file=sys.stderr)
        if upload.left_out:
            print(f"left out {', '.join(upload.left_out)}: other copies of the safetensors weights and scripts, "
                  "which the service does not read", file=sys.stderr)
        return upload
    if value.startswith(ID_PREFIXES[kind]):
        return value
    if kind == "model" and value.startswith("job_"):
        return client.get_job(value)
    also = ", or a job id (job_...) to start from its result" if kind == "model" else ""
    raise UsageError(f"{kind} {value!r} is neither a file nor a {kind} id ({ID_PREFIXES[kind]}...){also}")


def cmd_submit(args) -> int:
    spec = build_spec(args)
    # Checked before any upload: a typo in --set should not cost a model's upload first.
    JobCreate.model_validate({**spec, "model_id": "mdl_placeholder", "dataset_id": "ds_placeholder"})
    with client_for(args) as client:
        model = _upload_or_id(client, args.model, "model", getattr(args, "task", None))
        dataset = _upload_or_id(client, args.data, "dataset")
        stages = spec.pop("stages")
        options = {k: v for k, v in spec.items() if k not in ("model_id", "dataset_id")}  # the arguments say
        job = client.submit(model, dataset, stages, **options)
        print(job.id)
        if not (args.wait or args.download):
            return 0
        return _finish(job, args.download, quiet=args.quiet)


def _finish(job: Job, download: str | None, quiet: bool = False, timeout: float | None = None) -> int:
    job.wait(progress=not quiet, timeout=timeout)
    print(summary(job), file=sys.stderr)
    if job.status != "succeeded":
        return 1
    if download:
        for path in job.download(download):
            print(f"downloaded {path} (sha256 verified)", file=sys.stderr)
    return 0


def summary(job: Job) -> str:
    if job.status != "succeeded":
        error = job.error or {}
        return f"job {job.id} {job.status}: {error.get('code')}: {error.get('message')}"
    final, baseline = job.metrics.get("final") or {}, job.metrics.get("baseline") or {}
    metric = quality_metric(final)
    parts = [f"job {job.id} succeeded"]
    if metric:
        parts.append(f"{metric} {baseline.get(metric, float('nan')):.4f} -> {final[metric]:.4f}")
    if final.get("size_bytes") and baseline.get("size_bytes"):
        parts.append(f"size {baseline['size_bytes']:,} -> {final['size_bytes']:,} bytes "
                     f"({baseline['size_bytes'] / final['size_bytes']:.2f}x smaller)")
    return "; ".join(parts)


def cmd_jobs(args) -> int:
    with client_for(args) as client:
        jobs = client.jobs(status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps([job.data for job in jobs], indent=2))
        return 0
    print(f"{'id':22} {'status':10} {'progress':>8}  {'methods':28} {'model':22} created")
    for job in jobs:
        print(f"{job.id:22} {job.status:10} {overall(job.data) * 100:7.0f}%  {'+'.join(job.methods)[:28]:28} "
              f"{job.model_id or '(job ' + str(job.data.get('parent_job_id')) + ')':22} {job.data['created_at'][:19]}")
    return 0


def cmd_show(args) -> int:
    with client_for(args) as client:
        job = client.get_job(args.job)
        artifacts = job.artifacts()
    if args.json:
        print(json.dumps({**job.data, "artifacts": artifacts}, indent=2))
        return 0
    print(summary(job) if job.finished else f"job {job.id} {job.status}")
    from modelpress.progress import describe
    print(f"  progress  {describe(job.data)}")
    print(f"  stages    {' -> '.join(job.methods)}")
    print(f"  model     {job.model_id or job.data.get('parent_job_id')}   dataset {job.dataset_id}")
    print(f"  created   {job.data['created_at']}   started {job.data.get('started_at')}   "
          f"finished {job.data.get('finished_at')}")
    for stage in job.metrics.get("stages", []):
        figures = {k: v for k, v in stage["metrics"].items() if isinstance(v, (int, float)) and k != "parameters"}
        print(f"  stage {stage['method']:10} " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(figures.items())))
    for artifact in artifacts:
        print(f"  artifact  {artifact['id']}  stage {artifact['stage_index']}  {artifact['name']}  "
              f"{artifact['size_bytes']:,} bytes")
    return 0


def cmd_wait(args) -> int:
    with client_for(args) as client:
        return _finish(client.get_job(args.job), None, quiet=args.quiet, timeout=args.timeout)


def cmd_cancel(args) -> int:
    with client_for(args) as client:
        job = client.get_job(args.job).cancel()
    print(f"job {job.id} {job.status}" + ("" if job.finished else " (stops at its method's next step)"))
    return 0


def cmd_download(args) -> int:
    with client_for(args) as client:
        job = client.get_job(args.job)
        if job.status != "succeeded":
            print(f"job {job.id} is {job.status}: only a succeeded job has a model to download", file=sys.stderr)
            return 1
        for path in job.download(args.dir, everything=args.all):
            print(path)
    return 0


def cmd_logs(args) -> int:
    with client_for(args) as client:
        job = client.get_job(args.job)
        if not args.follow:
            for line in job.logs():
                print(_log_line(line))
            return 0
        for event in job.events():
            if event.kind == "log":
                print(_log_line(event.data), flush=True)
            elif event.kind == "end":
                return 0 if event.data["status"] == "succeeded" else 1
    return 0


def _log_line(line: dict) -> str:
    return f"{line['at'][:19]} {line['level']:7} {line['source']:8} {line['message']}"
