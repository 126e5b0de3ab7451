from typing import Annotated, Literal

from pydantic import Field, model_validator

from compression.specs.common import MAX_STEPS, Spec, Steps


class TrainingSpec(Spec):
    """How a method that trains (QAT, distillation, iPQ finetuning, pruning) runs its optimizer loop."""

    steps: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(1000, description=f"Optimizer steps (at most "
                                                                               f"{MAX_STEPS:,}).")
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = Field(64, description="Examples per optimizer step.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer of the trained "
                                                                           "parameters.")
    lr: Annotated[float, Field(gt=0, le=10)] = Field(1e-3, description="Peak learning rate.")
    weight_decay: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="L2 (adam, sgd) or decoupled "
                                                                              "(adamw) weight decay.")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="SGD momentum (sgd only).")
    schedule: Literal["cosine", "constant"] = Field("cosine", description="Learning rate after warmup: cosine "
                                                                           "decay to zero, or constant.")
    warmup_steps: Steps = Field(0, description="Linear warmup from lr/warmup_steps to lr.")
    grad_clip_norm: Annotated[float, Field(gt=0, le=1e6)] | None = Field(1.0, description="Clip the global gradient norm "
                                                                                  "to this; null disables.")
    mixed_precision: bool = Field(True, description="bfloat16 (or float16 with loss scaling) autocast; CUDA only, "
                                                    "ignored on CPU.")
    checkpoint_every: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(200, description="Steps between resumable checkpoints.")
    eval_every: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = Field(None, description="Steps between evaluations "
                                                                            "(always once at the end).")

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) exceeds steps ({self.steps}); lower warmup_steps")
        return self

    @staticmethod
    def defaults_fitted_to(defaults: dict, given: dict) -> dict:
        """A method's default warmup is a share of its default steps (qat: 50 of 1000): a user who asks for other
        steps and names no warmup gets the same share, not a warmup longer than the run."""
        if "steps" in given and "warmup_steps" not in given and defaults.get("warmup_steps"):
            default_steps = defaults.get("steps", TrainingSpec.model_fields["steps"].default)
            share = defaults["warmup_steps"] / default_steps
            return {**defaults, "warmup_steps": int(share * given["steps"]) if isinstance(given["steps"], int)
                    else defaults["warmup_steps"]}
        return defaults
