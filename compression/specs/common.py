"""The base of every spec and the bounded types they share.

Every number that means work (steps, samples, batches, list lengths) has an upper bound, generous for real jobs
but finite, so a spec cannot ask for unbounded work or storage; every float must be finite (JSON's Infinity and
NaN are refused, not stored as null).
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_STEPS = 10_000_000
MAX_SAMPLES = 10_000_000
MAX_PATTERNS = 256
MAX_NAME_CHARS = 200

# A split name, layer or parameter name, or fnmatch pattern of them.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Patterns = Annotated[list[Name], Field(max_length=MAX_PATTERNS)]
SplitName = Annotated[str, Field(min_length=1, max_length=100)]
Steps = Annotated[int, Field(ge=0, le=MAX_STEPS)]


class Spec(BaseModel):
    """Base of every spec: unknown fields are an error, so a typo is refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EvaluationSpec(Spec):
    split: SplitName = Field("val", description="Split used for before/after metrics (accuracy with labels, else "
                                                "fidelity to the uncompressed model).")
    max_samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = Field(
        None, description=f"Evaluate on at most this many examples (all when null; at most {MAX_SAMPLES:,}).")
    latency: bool = Field(True, description="Measure CPU latency before and after.")
    latency_batch_sizes: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [1, 32], min_length=1, max_length=8, description="Batch sizes timed (1-8 of them, each 1-1024).")
    compile: bool = Field(True, description="Time both models under torch.compile (how int8 is meant to run); "
                                            "false times them eagerly, which is much quicker to set up.")
