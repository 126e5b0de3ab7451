"""`modelpress`: submit and follow compression jobs, and run the service.

Exit status: 0 done; 1 the job failed or was cancelled (or a report found no jobs); 2 the command line is
wrong (an unknown option, a bad --set, a spec the API's models refuse, a service command on a client-only
install); 3 the API refused the request (the message is its error code and detail); 4 the service could not be
reached; 5 a download failed its sha256 check; 130 interrupted.

The service's address and key come from --url/--api-key, else MODELPRESS_URL/MODELPRESS_API_KEY, else
~/.config/modelpress/config.toml (url = "...", api_key = "..."), else http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import sys

import httpx
from pydantic import ValidationError

from modelpress.connection import ConfigError
from modelpress.errors import ApiError, ChecksumMismatch

USAGE, API, UNREACHABLE, CORRUPT = 2, 3, 4, 5


def _command(name: str):
    """The function behind a command, imported when it runs (the service commands need the server packages)."""
    module, _, function = name.rpartition(".")

    def run(args) -> int:
        import importlib
        try:
            command = getattr(importlib.import_module(f"modelpress.{module}"), function)
            return command(args)
        except ModuleNotFoundError as exc:
            if module != "service_commands" or (exc.name or "").split(".")[0] in ("modelpress", "app", "core"):
                raise
            raise ServerNotInstalled(f"`{args.command}` runs the service, which needs {exc.name!r}: "
                                     'pip install "modelpress[server]"') from None
    return run


class ServerNotInstalled(ValueError):
    """A service command on a client-only install."""


def _options() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (`modelpress up --data-dir D` and
    `modelpress --data-dir D up` alike)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="service address (env MODELPRESS_URL)")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (env MODELPRESS_API_KEY)")
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data directory of the embedded default (env MODELPRESS_DATA_DIR; default "
                             "~/.local/share/modelpress)")
    return common


def _user_commands(commands, common) -> None:
    def add(name: str, function: str, help: str):
        parser = commands.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=_command(function))
        return parser

    submit = add("submit", "job_commands.cmd_submit", "upload (if given files) and submit a job; prints its id")
    submit.add_argument("model", help="a .pt2 file to upload, a Hugging Face folder (its directory, or a .zip/.tar/"
                                      ".tar.gz of it), a model id (mdl_...), or a job id (job_...) to start from that "
                                      "job's final model")
    submit.add_argument("data", help="an .npz (or, with a text model's folder, .jsonl text) file to upload, or a "
                                     "dataset id (ds_...)")
    # (the server's TASKS and TASK_ALIASES, written out: importing compression.archive would load numpy into the
    # CLI; tests/modelpress/test_cli.py keeps the lists equal)
    submit.add_argument("--task", choices=["feature-extraction", "sequence-classification", "token-classification",
                                           "question-answering", "multiple-choice", "fill-mask",
                                           "image-classification", "video-classification",
                                           "semantic-segmentation", "depth-estimation", "image-to-image",
                                           "pose-estimation", "image-matting", "normal-estimation",
                                           "pointmap-estimation", "object-detection",
                                           "zero-shot-image-classification", "zero-shot-object-detection",
                                           "audio-classification",
                                           "audio-xvector", "audio-frame-classification",
                                           "speech-recognition", "causal-lm", "seq2seq-lm", "speech-seq2seq",
                                           "image-to-text", "image-feature-extraction", "audio-feature-extraction",
                                           "time-series-classification", "time-series-regression",
                                           "time-series-forecasting", "text-classification", "zero-shot-classification", "ner",
                                           "text-generation", "text2text-generation", "translation",
                                           "summarization", "sentence-similarity", "automatic-speech-recognition",
                                           "image-segmentation"],
                        help="what a Hugging Face folder's model does (default: from its config.json); "
                             "transformers' pipeline names are taken for the task they run")
    submit.add_argument("--method", action="append", help="a stage's method (ptq, qat, kd, function_matching, "
                        "quantized_distillation, differentiable_quantization, quant_noise, ipq, prune); repeat "
                        "for a pipeline")
    submit.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="a field of the last stage (training.steps=200, weights.bits=4), or of the job "
                             "(evaluation.latency=false, seed=1, time_limit_s=600); values are JSON where they "
                             "parse as JSON")
    submit.add_argument("--spec", help="a JSON file with the job's fields (stages, evaluation, ...); --method "
                                       "and --set apply on top")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end (exit 1 if it fails)")
    submit.add_argument("--download", metavar="DIR", help="wait, then download the final model into DIR")
    submit.add_argument("--quiet", action="store_true", help="no progress line while waiting")

    jobs = add("jobs", "job_commands.cmd_jobs", "list jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jobs.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    jobs.add_argument("--json", action="store_true", help="the API's JSON")

    show = add("show", "job_commands.cmd_show", "a job's status, progress, metrics and artifacts")
    show.add_argument("job")
    show.add_argument("--json", action="store_true", help="the API's JSON, artifacts included")

    wait = add("wait", "job_commands.cmd_wait", "follow a job to its end with a progress line (exit 1 if it "
                                                 "fails)")
    wait.add_argument("job")
    wait.add_argument("--timeout", type=float, help="give up after this many seconds")
    wait.add_argument("--quiet", action="store_true", help="no progress line")

    cancel = add("cancel", "job_commands.cmd_cancel", "cancel a job")
    cancel.add_argument("job")

    download = add("download", "job_commands.cmd_download", "download a job's final model (sha256 checked)")
    download.add_argument("job")
    download.add_argument("dir", nargs="?", default=".", help="directory (default: here)")
    download.add_argument("--all", action="store_true", help="every artifact of every stage")

    logs = add("logs", "job_commands.cmd_logs", "a job's own log")
    logs.add_argument("job")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the job ends")

    report = add("report", "report.cmd_report", "every job on a model: a table and plots (SVG) of quality "
                                                 "against size and latency")
    report.add_argument("model", help="model id (mdl_...)")
    report.add_argument("--out", default=".", help="directory for the table and plots (default: here)")


def _service_commands(commands, common) -> None:
    def add(name: str, function: str, help: str, parent=commands):
        parser = parent.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(func=_command(function))
        return parser

    up = add("up", "service_commands.cmd_up", "run the API and one worker on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)

    api = add("api", "service_commands.cmd_api", "run the HTTP API only")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=None, help="uvicorn worker processes (default: "
                                                               "MODELPRESS_API_WORKERS, else 2 on 2+ CPUs)")

    worker = add("worker", "service_commands.cmd_worker", "run one Celery worker (one per GPU)")
    worker.add_argument("--queues", help="comma-separated queues to consume: cpu, gpu or gpu,cpu (default: gpu,cpu "
                                        "on a GPU worker, cpu otherwise)")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--events", action="store_true", help="send Celery task events (for Flower or "
                                                              "`celery events`)")
    worker.add_argument("--name", default="modelpress@%h", help="Celery node name; give each worker on one "
                                                                  "host its own (e.g. gpu0@%%h)")

    add("migrate", "service_commands.cmd_migrate", "bring the database schema to the latest revision")

    keys = commands.add_parser("keys", help="manage API keys (on the service's database)").add_subparsers(
        dest="keys_command", required=True)
    create = add("create", "service_commands.cmd_keys_create", "create an API key (printed once)", keys)
    create.add_argument("--tenant", required=True, help="tenant the key belongs to (created if new)")
    listing = add("list", "service_commands.cmd_keys_list", "list keys (id, tenant, first characters)", keys)
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = add("revoke", "service_commands.cmd_keys_revoke", "revoke a key (by id or the key itself)", keys)
    revoke.add_argument("key", help="key id (key_...) from `keys list`, or the key")

    store = commands.add_parser("store", help="the object store").add_subparsers(dest="store_command",
                                                                                 required=True)
    check = add("check", "service_commands.cmd_store_check", "count store objects without rows and blob rows "
                                                             "without objects (exit 1 unless all are 0)", store)
    check.add_argument("--min-age-s", type=float, default=0.0, help="leave out objects younger than this "
                                                                    "(writes in progress)")
    check.add_argument("--sweep", action="store_true", help="also remove stray objects and unused blobs older "
                                                            "than MODELPRESS_STORE_SWEEP_GRACE_S")

    demo = add("demo", "service_commands.cmd_demo", "end-to-end demo: int8 PTQ of a CNN trained on scikit-learn "
                                                    "digits")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--no-compile", action="store_true", help="time models eagerly (quicker, no int8 speed-up)")


def build_parser() -> argparse.ArgumentParser:
    common = _options()
    parser = argparse.ArgumentParser(prog="modelpress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    _user_commands(commands, common)
    _service_commands(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except ApiError as exc:
        print(f"error: {exc.error}: {exc.detail}", file=sys.stderr)
        return API
    except httpx.TransportError as exc:
        print(f"error: cannot reach the service ({type(exc).__name__}: {exc}); check --url or MODELPRESS_URL",
              file=sys.stderr)
        return UNREACHABLE
    except ChecksumMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return CORRUPT
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"error: the job spec is invalid: {problems}", file=sys.stderr)
        return USAGE
    except (ConfigError, ValueError) as exc:  # UsageError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    sys.exit(main())
