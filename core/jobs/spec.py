"""The job spec a client submits and the worker runs: stored as JSON in the job row, validated by both."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compression.specs import EvaluationSpec, StageSpec
from compression.specs.common import SplitName
from core.jobs.webhooks import check_url_syntax

ResourceId = Annotated[str, Field(min_length=1, max_length=64)]


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000, description="Called once with POST when the job reaches a "
                                                                "final state (retried with backoff on network "
                                                                "errors, 5xx and 429). Must resolve to a public "
                                                                "address.")
    secret: str = Field(min_length=16, max_length=256, description="Your signing secret: every call carries "
                                                                   "`X-Modelpress-Signature: t=<unix time>,v1="
                                                                   "<hex HMAC-SHA256 of '<t>.<body>'>`. Never "
                                                                   "shown again.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        check_url_syntax(url)
        return url


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "gpu", "any"] = Field(
        "any", description="Kind of worker to run on: cpu, gpu, or any (a job with a training stage prefers a GPU "
                           "worker, one without prefers a CPU worker; either runs where a worker is live).")
    memory_bytes: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Memory the job needs (RAM on a CPU worker, GPU memory on a GPU worker); default: "
                          "estimated from the model and dataset sizes. No worker with less starts it.")


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=(), json_schema_extra={
        "examples": [{"model_id": "mdl_3f2a9c1b7d4e5f60", "dataset_id": "ds_0a1b2c3d4e5f6789",
                      "stages": [{"method": "ptq", "calibration_split": "train", "calibration_samples": 256}],
                      "evaluation": {"split": "val", "latency": True, "latency_batch_sizes": [1, 32]}}]})

    model_id: ResourceId | None = Field(None, description="Uploaded model to compress (or give parent_job_id).")
    parent_job_id: ResourceId | None = Field(None, description="Start from the final model of an earlier "
                                                               "succeeded job instead of an upload.")
    dataset_id: ResourceId
    stages: list[StageSpec] = Field(min_length=1, max_length=16, description="Methods applied in order; each "
                                                                              "stage's output feeds the next.")
    train_split: SplitName = Field("train", description="Split used by stages that train or calibrate by default.")
    evaluation: EvaluationSpec = EvaluationSpec()
    time_limit_s: Annotated[int, Field(ge=10, le=10**9)] | None = Field(
        None, description="Wall-clock limit in seconds; default and maximum are set by the service.")
    resources: Resources = Resources()
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of every random choice (0 to 2**32-1).")
    webhook: WebhookSpec | None = Field(None, description="Optional: a URL told when the job ends, signed with "
                                                         "your secret.")
