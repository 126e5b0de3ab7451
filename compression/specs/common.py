"""The base of every spec and the bounded types they share.

Every number that means work (steps, samples, batches, list lengths) has an upper bound, generous for real jobs
but finite, so a spec cannot ask for unbounded work or storage; every float must be finite (JSON's Infinity and
NaN are refused, not stored as null).
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compression.specs.metrics import MetricName, OutputKind

MAX_STEPS = 10_000_000
MAX_SAMPLES = 10_000_000
MAX_PATTERNS = 256
MAX_NAME_CHARS = 200

# A split name, layer or parameter name, or fnmatch pattern of them.
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Patterns = Annotated[list[Name], Field(max_length=MAX_PATTERNS)]
SplitName = Annotated[str, Field(min_length=1, max_length=100)]
Steps = Annotated[int, Field(ge=0, le=MAX_STEPS)]
# A zero-shot image classifier's class names: what its text tower reads, one prompt each (transformers' pipeline
# takes up to a few hundred; ImageNet's 1,000 fit).
MAX_CANDIDATE_LABELS = 1000
CandidateLabel = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
DEFAULT_HYPOTHESIS = "This is a photo of {}."  # transformers' zero-shot-image-classification pipeline's


class Spec(BaseModel):
    """Base of every spec: unknown fields are an error, so a typo is refused rather than silently ignored.

    A nested section given in part (`"training": {"steps": 10}`) overrides only the fields it names: the others keep
    the values of the field's default, which is where a method keeps its own defaults (iPQ finetunes at lr 1e-4,
    not at TrainingSpec's generic 1e-3)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _partial_sections_keep_defaults(cls, data):
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            given = data.get(name)
            if not isinstance(given, dict):
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                base = default.model_dump(exclude_unset=True)
                fit = getattr(default, "defaults_fitted_to", None)  # defaults that depend on what was given
                merged[name] = _overlay(fit(base, given) if fit else base, given)
        return merged


def _overlay(base: dict, given: dict) -> dict:
    """`base` with every key of `given` replacing it, nested objects merged key by key the same way."""
    merged = dict(base)
    for key, value in given.items():
        merged[key] = _overlay(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
            else value
    return merged


class EvaluationSpec(Spec):
    split: SplitName = Field("val", description="Split used for before/after metrics (accuracy with labels, else "
                                                "fidelity to the uncompressed model).")
    max_samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = Field(
        None, description=f"Evaluate on at most this many examples (at most {MAX_SAMPLES:,}). Null: all of the "
                          "split, except for a large model: the first examples that fit a compute budget of 0.5 "
                          "TFLOP per evaluation (at least 128), which the metrics then say (evaluation_capped).")
    latency: bool = Field(True, description="Measure CPU latency before and after.")
    latency_batch_sizes: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [1, 32], min_length=1, max_length=8, description="Batch sizes timed (1-8 of them, each 1-1024).")
    compile: bool = Field(True, description="Time both models under torch.compile (how int8 is meant to run); "
                                            "false times them eagerly, which is much quicker to set up.")
    output_kind: OutputKind | None = Field(
        None, description="What the model outputs: 'logits' (classes), 'embeddings' (one vector per example), "
                          "'sigmoid' (independent probabilities in [0, 1]), 'hidden_states' (a vector per "
                          "position), 'regression' (the values a regression head predicts, [batch] or "
                          "[batch, K]: labels are those values, trained with MSE and judged by label_spearman) or "
                          "'detections' (an object detector's [batch, queries, classes + 4]: each query's class "
                          "probabilities, then its box); null detects it from the model's output ('regression' for "
                          "a Hugging Face folder whose config.json problem_type is 'regression' or whose .jsonl "
                          "labels are values, 'detections' for an object-detection folder). Chooses "
                          "the fidelity metrics and the distillation loss.")
    multi_label: bool = Field(
        False, description="The labels ('<split>.y') are a 0/1 matrix [N, K], one independent label per output of a "
                            "[batch, K] model (multi-label), rather than class indices. The outputs are logits "
                            "(thresholded at 0, trained with binary cross-entropy with logits) unless output_kind "
                            "is 'sigmoid' (probabilities, thresholded at 0.5), which implies this. Accuracy is then "
                            "the fraction of labels the thresholded outputs agree with.")
    sentence_embedding: bool = Field(
        True, description="For a feature-extraction Hugging Face folder from sentence-transformers (modules.json "
                          "with a Pooling module): true makes the model's output the sentence embedding the folder "
                          "declares (its pooling over the real tokens, then L2 normalization when it lists "
                          "Normalize), which metrics and distillation then compare; false keeps the transformer's "
                          "token vectors (last_hidden_state). No effect on other models.")
    metric: MetricName | None = Field(
        None, description="The metric every stage is judged by, in points (0-100, higher is better): 'accuracy' "
                          "(needs labels), 'top1_agreement' (logits, sigmoid), 'cosine' (any output), "
                          "'similarity_spearman' (embeddings: rank agreement of pairwise similarities) or "
                          "'soft_dice' (sigmoid: 2 sum(p q) / (sum p^2 + sum q^2) of the probabilities), 'bin_f1' "
                          "(sigmoid: F1 of the bins above 0.5) or 'bin_agreement' (sigmoid: fraction of bins on or "
                          "off in both) or 'score_spearman' (one score per example, [batch] or [batch, 1]: rank "
                          "correlation of the scores across examples, for rerankers and regression heads; per "
                          "target, averaged, for a regression output [batch, K]) or 'label_spearman' (regression: "
                          "rank correlation of the outputs with the values in the labels) or 'detection_map' "
                          "(detections: mean average precision against the upload's detections). Null: accuracy "
                          "with labels (label_spearman for regression), else the output kind's default "
                          "(top1_agreement, similarity_spearman, soft_dice, cosine, detection_map), and "
                          "score_spearman for a Hugging Face "
                          "sequence classifier with one label.")
    candidate_labels: Annotated[list[CandidateLabel], Field(min_length=2, max_length=MAX_CANDIDATE_LABELS)] | \
            None = Field(
        None, description="For a zero-shot-image-classification Hugging Face folder (CLIP, SigLIP, ALIGN, ...), "
                          "required: the classes it chooses among, as transformers' pipeline takes them "
                          "(2-1,000 distinct names); each is put in hypothesis_template and read by the text "
                          "tower once, and the program scores every image against those texts. Labels "
                          "('<split>.y') are indices into this list. For a zero-shot-object-detection folder "
                          "(OWL-ViT, OWLv2, Grounding DINO), required: the objects it looks for, each a text "
                          "query as given (in hypothesis_template only where that is set to another text). Refused "
                          "for other models.")
    hypothesis_template: str = Field(
        DEFAULT_HYPOTHESIS, min_length=2, max_length=MAX_NAME_CHARS,
        description="The text each candidate label is put into, at its one '{}' (no other braces).")
    max_metric_drop: Annotated[float, Field(ge=0, le=100)] | None = Field(
        None, description="Budget in points of the metric: a stage whose model falls further below the uploaded "
                          "model fails the job (its measured metrics are kept). Null: no budget; a collapse is "
                          "then a warning.")
    warn_metric_drop: Annotated[float, Field(gt=0, le=100)] = Field(
        20.0, description="A stage whose metric drops more than this many points below the upload's, or below "
                          "half of it, ends with a warning in its metrics (when no budget fails it).")

    @model_validator(mode="after")
    def _one_label_slot(self):
        rest = self.hypothesis_template.replace("{}", "")
        if self.hypothesis_template.count("{}") != 1 or "{" in rest or "}" in rest:
            raise ValueError(f"hypothesis_template must hold '{{}}' once, where each candidate label goes, and no "
                             f"other braces (got {self.hypothesis_template!r})")
        if self.candidate_labels is not None and len(set(self.candidate_labels)) != len(self.candidate_labels):
            twice = sorted({label for label in self.candidate_labels if self.candidate_labels.count(label) > 1})
            raise ValueError(f"candidate_labels must be distinct ({twice[:5]} appear more than once)")
        return self

    def prompts(self) -> list[str] | None:
        """The texts a zero-shot image classifier's text tower reads: each candidate label in the template (by
        replacement, not str.format, which would read attributes named in the template)."""
        if self.candidate_labels is None:
            return None
        return [self.hypothesis_template.replace("{}", label) for label in self.candidate_labels]

    def queries(self) -> list[str] | None:
        """The text queries a zero-shot object detector looks for: each candidate label as given, as transformers'
        pipeline passes them (OWL-ViT was trained on bare object names), or in the hypothesis_template where the
        job sets one other than the classifiers' default."""
        if self.candidate_labels is None or self.hypothesis_template != DEFAULT_HYPOTHESIS:
            return self.prompts()
        return list(self.candidate_labels)

    def declared_by_head(self, head: dict | None) -> "EvaluationSpec":
        """What a Hugging Face classifier's config.json problem_type declares, where the job did not say: `head`
        (the folder's "classes" facts) with "regression" makes the output kind 'regression' (labels are the
        values it predicts), with "multi_label" the labels independent (a 0/1 matrix)."""
        if not head or self.output_kind is not None:
            return self
        if head.get("regression"):
            return self.model_copy(update={"output_kind": "regression"})
        if head.get("multi_label") and not self.multi_label:
            return self.model_copy(update={"multi_label": True})
        return self
