from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Spec(BaseModel):
    """Base of every spec: unknown fields are an error, so a typo is refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class EvaluationSpec(Spec):
    split: str = Field("val", description="Split used for before/after metrics (accuracy with labels, else "
                                          "fidelity to the uncompressed model).")
    max_samples: Annotated[int, Field(ge=1)] | None = Field(None, description="Evaluate on at most this many "
                                                                             "examples (all when null).")
    latency: bool = Field(True, description="Measure CPU latency before and after.")
    latency_batch_sizes: list[Annotated[int, Field(ge=1, le=1024)]] = Field([1, 32], min_length=1)
    compile: bool = Field(True, description="Time both models under torch.compile (how int8 is meant to run); "
                                            "false times them eagerly, which is much quicker to set up.")
