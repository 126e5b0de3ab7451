from typing import Annotated, Literal

from pydantic import Field, model_validator

from compression.specs.common import MAX_STEPS, Patterns, Spec, Steps
from compression.specs.training import TrainingSpec

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class GradualScheduleSpec(Spec):
    """Zhu & Gupta (2017) cubic schedule: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))**3, raised every
    `prune_every` finetuning steps between `start_step` and `end_step`, then held while the model recovers."""

    initial_sparsity: Fraction = Field(0.0, description="Sparsity at start_step.")
    start_step: Steps = Field(0, description="Finetuning step of the first mask update.")
    end_step: Annotated[int, Field(ge=1, le=MAX_STEPS)] | None = Field(None, description="Step at which the target is reached "
                                                                           "(default: 75% of the finetune steps).")
    prune_every: Annotated[int, Field(ge=1, le=MAX_STEPS)] = Field(50, description="Steps between two mask updates.")


class PruneDistillSpec(Spec):
    """Finetune the pruned model towards the unpruned upload (task.reference) as teacher:
    loss = (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)) + alpha * CE(s, labels), as in the KD stage."""

    temperature: Annotated[float, Field(gt=0, le=100)] = Field(4.0, description="Softmax temperature T "
                                                                               "(class logits).")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="Weight of hard-label cross-entropy; "
                                                                       "needs labels in the training split.")


class PruneSpec(Spec):
    """Pruning. `unstructured` zeroes individual conv/linear weights (stored compactly as bitmask + nonzero values);
    `structured` removes whole conv channels / linear units, so the exported model is really smaller and faster."""

    method: Literal["prune"] = "prune"
    kind: Literal["unstructured", "structured"] = Field("unstructured", description="Zero single weights, or "
                                                                                    "remove whole channels.")
    sparsity: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(0.5, description="Unstructured: fraction of "
                                                          "prunable weights set to zero. Structured: fraction of "
                                                          "channels removed from every prunable channel group.")
    scope: Literal["global", "layerwise"] = Field("global", description="Unstructured: rank weights across all "
                                                  "layers at once, or reach the sparsity in every layer.")
    criterion: Literal["magnitude", "lamp", "synflow", "l1", "l2"] = Field(
        "magnitude", description="Unstructured: 'magnitude' (|w|), 'lamp' (layer-adaptive magnitude, Lee et al. "
                                 "2021: safer with 'global' scope on BatchNorm networks) or 'synflow' (data-free, "
                                 "before training). "
                                 "Structured: 'l1' or 'l2' norm of each channel's weights ('magnitude' means l2).")
    synflow_iterations: Annotated[int, Field(ge=1, le=1000)] = Field(100, description="SynFlow rounds; sparsity "
                                                                     "grows exponentially over them.")
    exclude: Patterns = Field([], description="fnmatch patterns of parameter names never pruned, e.g. "
                                              "'stem.*' (at most 256).")
    schedule: Literal["one_shot", "gradual"] = Field("one_shot", description="Prune once, or raise the sparsity "
                                                                             "step by step while finetuning.")
    gradual: GradualScheduleSpec = Field(GradualScheduleSpec(), description="The gradual schedule (schedule "
                                                                            "'gradual' only).")
    finetune: TrainingSpec | None = Field(None, description="Finetune with the masks held (unstructured) or the "
                                                            "smaller architecture (structured).")
    distill: PruneDistillSpec | None = Field(None, description="Finetune towards the unpruned upload as "
                                                               "teacher; null trains on the labels.")
    recalibrate_batches: Annotated[int, Field(ge=0, le=10_000)] = Field(
        50, description="After one-shot pruning, re-estimate BatchNorm statistics over this many training batches "
                        "(inputs only, no gradients); 0 disables. Without it a heavily pruned BatchNorm network "
                        "can fall to chance accuracy before finetuning.")
    rewind_step: Steps | None = Field(
        None, description="Lottery-ticket rewinding: finetune densely, recording the weights at this step; prune; "
                          "reset the surviving weights to the recorded ones and retrain with the mask (doubles the "
                          "finetuning cost).")

    @model_validator(mode="after")
    def _consistent(self) -> "PruneSpec":
        structured_criteria = {"l1", "l2"}
        if self.kind == "structured":
            if self.criterion == "magnitude":
                self.criterion = "l2"
            if self.criterion not in structured_criteria:
                raise ValueError("structured pruning ranks channels by their weights' 'l1' or 'l2' norm")
            if self.schedule != "one_shot" or self.rewind_step is not None:
                raise ValueError("structured pruning is one-shot; gradual schedules and rewinding apply to "
                                 "unstructured pruning")
        elif self.criterion in structured_criteria:
            raise ValueError("unstructured pruning ranks weights by 'magnitude', 'lamp' or 'synflow'")
        if self.schedule == "gradual" or self.rewind_step is not None or self.distill is not None:
            if self.finetune is None:
                raise ValueError("gradual pruning, rewinding and distillation need a 'finetune' section")
        if self.schedule == "gradual":
            if self.rewind_step is not None:
                raise ValueError("rewinding prunes once after dense training; use schedule 'one_shot' with it")
            end = self.gradual.end_step or max(1, int(0.75 * self.finetune.steps))
            if not self.gradual.start_step < end <= self.finetune.steps:
                raise ValueError(f"gradual schedule needs start_step < end_step <= finetune.steps, got "
                                 f"{self.gradual.start_step}, {end}, {self.finetune.steps}")
            if self.gradual.initial_sparsity > self.sparsity:
                raise ValueError("gradual.initial_sparsity must not exceed the target sparsity")
        if self.rewind_step is not None and self.rewind_step >= self.finetune.steps:
            raise ValueError("rewind_step must be earlier than the end of finetuning")
        if self.criterion == "synflow" and (self.rewind_step is not None or self.schedule == "gradual"):
            raise ValueError("synflow prunes once before training; gradual schedules and rewinding rank the "
                             "trained weights ('magnitude' or 'lamp')")
        return self
