import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from compression.archive.limits import ArchiveLimits


def default_data_dir() -> Path:
    """Per user, not per working directory: `modelpress keys create` run anywhere reaches the database that
    `modelpress up` serves. $XDG_DATA_HOME/modelpress, else ~/.local/share/modelpress."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "modelpress"


class Settings(BaseSettings):
    """All settings, read from the environment with the prefix MODELPRESS_ (e.g. MODELPRESS_DATABASE_URL)."""

    model_config = SettingsConfigDict(env_prefix="MODELPRESS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Holds the embedded SQLite database "
                           "and broker; default ~/.local/share/modelpress ($XDG_DATA_HOME/modelpress).")
    database_url: str | None = Field(None, description="Default: SQLite file in data_dir.")
    broker_url: str | None = Field(None, description="Default: kombu's SQLAlchemy transport on SQLite in data_dir.")
    auto_migrate: bool | None = Field(None, description="Migrate the schema at start-up; default: only for SQLite.")

    max_model_bytes: int = 2 * 1024**3
    max_dataset_bytes: int = 4 * 1024**3

    # Where uploads, artifacts and checkpoints are stored (core/store/); the database keeps only their metadata.
    store_url: str | None = Field(None, description="file:///path (default: <data_dir>/store) or s3://bucket[/prefix] "
                                                    "for an S3-protocol object store.")
    store_s3_endpoint_url: str | None = Field(None, description="S3 endpoint the services use (e.g. "
                                                                "http://minio:9000); default: AWS.")
    store_s3_public_endpoint_url: str | None = Field(None, description="Endpoint named in presigned download URLs, "
                                                                       "when clients reach the store elsewhere.")
    store_s3_region: str | None = None
    store_s3_access_key_id: str | None = Field(None, description="Default: boto3's credential chain (AWS_*).")
    store_s3_secret_access_key: str | None = None
    store_presign_downloads: bool = Field(True, description="Answer artifact downloads with a 307 redirect to a "
                                                            "presigned URL where the store can make one.")
    store_presign_expires_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    store_sweep_interval_s: float = Field(3600.0, gt=0, description="How often each worker runs the store's "
                                                                   "lifecycle task: expired uploads, job "
                                                                   "retention, stray objects.")
    store_sweep_grace_s: float = Field(3600.0, ge=0, description="Store objects without a row (a write cut off "
                                                                 "by a crash) older than this are removed.")
    upload_part_max_bytes: int = Field(64 * 1024**2, ge=5 * 1024**2, description="Largest part of a resumable "
                                                                                 "upload.")
    upload_session_ttl_s: int = Field(24 * 3600, ge=60, description="A resumable upload not completed this long "
                                                                    "after it was created expires, with its parts.")
    job_retention_s: int | None = Field(None, ge=60, description="Finished jobs older than this are deleted with "
                                                                 "their artifacts; default: kept until deleted.")
    max_json_body_bytes: int = Field(1024**2, description="Largest request body other than an upload (job "
                                                          "specs); a larger one is refused with 413.")

    quota_stored_bytes: int = Field(50 * 1024**3, description="Per tenant: bytes of models, datasets and job "
                                                              "artifacts stored; uploads past it get 429.")
    quota_active_jobs: int = Field(20, description="Per tenant: queued + running jobs; more submissions get 429.")
    quota_retry_after_s: int = Field(60, description="Retry-After sent with 429 when waiting for jobs helps.")
    idempotency_ttl_s: int = Field(24 * 3600, description="How long an Idempotency-Key replays its first result.")
    idempotency_wait_s: float = Field(10.0, description="How long a request waits for another one holding the same "
                                                        "Idempotency-Key before 409 (PostgreSQL).")

    # Caps on reading one uploaded archive (.pt2/.npz), counted on decompressed bytes (compression.archive).
    archive_max_entries: int = Field(20_000, ge=1)
    archive_max_member_bytes: int = Field(4 * 1024**3, ge=1)
    archive_max_total_bytes: int = Field(8 * 1024**3, ge=1)
    archive_max_metadata_bytes: int = Field(32 * 1024**2, ge=1, description="JSON/pickle members, parsed in memory.")
    archive_max_json_depth: int = Field(64, ge=1)

    job_time_limit_s: int = Field(6 * 3600, description="Default and upper bound of a job's time limit.")
    job_max_attempts: int = Field(3, description="A job whose worker died this many times is failed.")
    job_pace_evidence_s: float = Field(30.0, gt=0, description="A training phase runs this long before its pace "
                                       "is judged; a phase whose pace shows it cannot end within the job's time limit "
                                       "then fails at once with its estimate. Shorter judges on the noisier first "
                                       "steps (compiling, warming caches).")
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = Field(60.0, description="A running job without heartbeat this long is re-queued.")
    progress_interval_s: float = Field(0.3, description="Progress is written to the job row at most this often.")
    job_log_max_lines: int = Field(2000, ge=10, description="Lines kept in one job's log (GET /v1/jobs/{id}/logs); "
                                                            "later ones are dropped after a line saying so.")
    embedded_broker_poll_s: float = Field(0.1, gt=0, description="How often an idle worker polls the embedded "
                                          "broker (it has no blocking read): about the longest a job waits in "
                                          "`queued` for an idle worker (kombu's default of 1 s made it ~1-2 s); "
                                          "each poll is one indexed SELECT per queue.")
    worker_memory_bytes: int | None = Field(None, ge=1, description="Memory a worker advertises (jobs that need "
                                            "more are not started there); default: the GPU's memory on a GPU "
                                            "worker, the machine's RAM on a CPU worker.")
    worker_stale_after_s: float = Field(30.0, gt=0, description="A worker without heartbeat this long is not "
                                                                "live: jobs are not routed to it.")
    worker_forget_after_s: float = Field(24 * 3600.0, gt=0, description="A worker silent this long is removed "
                                                                        "from the registry.")
    worker_fleet_fixed: bool = Field(False, description="The registered workers are the whole fleet (no "
                                                        "autoscaling): a job none of them could run is refused "
                                                        "with 422 instead of waiting.")
    lost_queued_after_s: float = Field(600.0, gt=0, description="A queued job whose message the broker no longer "
                                                                "holds after this long is re-sent.")
    tenant_priorities: dict[str, Annotated[int, Field(ge=0, le=9)]] = Field(
        {}, description="Priority 0-9 per tenant name (higher runs first among waiting jobs; Redis only), e.g. "
                        "'{\"acme\": 9}'.")
    default_priority: int = Field(5, ge=0, le=9, description="Priority of tenants not in tenant_priorities.")
    device: str = Field("auto", description="Worker device: auto (cuda when available), cpu or cuda[:N].")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads per job (torch.set_num_threads); "
                                                              "default: torch's choice (all cores).")

    # A job's compression work runs in a sandboxed child process of the worker (worker/sandbox.py).
    sandbox_user: str = Field("nobody", description="User a job's process runs as when the worker runs as root; "
                                                    "empty: the worker's own user.")
    sandbox_memory_bytes: int | None = Field(None, ge=1, description="Address-space limit (RLIMIT_AS) of a job's "
                                             "process; default: the machine's memory for CPU jobs, none on a GPU.")
    sandbox_cpu_seconds: int | None = Field(None, ge=1, description="CPU-time limit (RLIMIT_CPU) of a job's "
                                            "process; default: its time limit times the number of CPUs.")
    sandbox_max_open_files: int = Field(4096, ge=64, description="Open-file limit (RLIMIT_NOFILE) of a job's "
                                                                 "process.")
    sandbox_max_file_bytes: int = Field(16 * 1024**3, ge=1, description="Largest file a job's process may write "
                                                                        "(RLIMIT_FSIZE).")
    sandbox_kill_grace_s: float = Field(30.0, gt=0, description="After a cancel or the time limit, a job's process "
                                                                "that has not stopped this long is killed.")
    sandbox_scratch_dir: Path | None = Field(None, description="Parent of the jobs' scratch directories; default: "
                                                               "modelpress-scratch in the system temp dir.")
    sandbox_pass_env: list[str] = Field([], description="More environment variables passed to a job's process "
                                                        "(MODELPRESS_ ones never are).")

    api_workers: int | None = Field(None, ge=1, description="uvicorn worker processes of `modelpress api`, each "
                                                           "with its own in-flight limit, threads and database "
                                                           "pool; default: 2 where there are 2 CPUs or more.")
    webhook_allow_private_addresses: bool = Field(False, description="Let job webhooks call loopback, private "
                                                                     "and link-local addresses (development and "
                                                                     "tests only: it lets tenants reach your "
                                                                     "network).")
    webhook_max_attempts: int = Field(8, ge=1, le=50, description="Tries per webhook (backoff 2, 4, 8 ... s, at "
                                                                  "most 10 min apart) before it is marked failed.")
    metrics_token: str | None = Field(None, description="When set, GET /metrics needs `Authorization: Bearer "
                                                         "<token>`; otherwise it is open (service-wide counts "
                                                         "only, nothing of a tenant).")
    api_access_log: bool = Field(True, description="Log every request (one line each, about 10 % of a poll's CPU).")
    api_max_in_flight: int = Field(16, ge=1, description="Requests one API process handles at once; more wait "
                                                         "for a slot.")
    api_max_queued: int = Field(1000, ge=0, description="Requests one API process lets wait for a slot; beyond "
                                                        "that it answers 503 (overloaded) at once.")
    api_queue_timeout_s: float = Field(15.0, gt=0, description="Longest wait for a slot before a 503 (overloaded); "
                                                               "keep it under clients' timeouts.")
    api_max_event_streams: int = Field(200, ge=1, description="Open event streams (GET /v1/jobs/{id}/events) "
                                                              "per API process; they hold no request slot or "
                                                              "database connection while they wait, and more get "
                                                              "503.")
    events_poll_interval_s: float = Field(0.5, gt=0, description="How often an event stream reads its job.")
    db_pool_size: int | None = Field(None, ge=1, description="Database connections per process; default: "
                                                             "api_max_in_flight + 4, so admitted requests never "
                                                             "wait for one.")
    db_pool_timeout_s: float = Field(5.0, gt=0, description="Longest wait for a database connection; the API "
                                                            "answers 503 (overloaded) after it.")
    auth_cache_ttl_s: float = Field(5.0, ge=0, description="How long the API trusts a key it has looked up: a "
                                                           "revoked key stops working within this many seconds "
                                                           "(0: look up on every request).")

    @property
    def resolved_db_pool_size(self) -> int:
        return self.db_pool_size or self.api_max_in_flight + 4

    @property
    def resolved_api_workers(self) -> int:
        # One event loop per process does the HTTP and framework work of every request; a second process on a
        # second core halved the poll p99 at 200 req/s on a busy 2-core machine (bench/load.py).
        return self.api_workers or min(2, os.cpu_count() or 1)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'modelpress.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.db'}"

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or (self.data_dir.resolve() / "store").as_uri()

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(self.archive_max_entries, self.archive_max_member_bytes, self.archive_max_total_bytes,
                             self.archive_max_metadata_bytes, self.archive_max_json_depth)

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings
