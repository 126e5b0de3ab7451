"""Which quality metric a job is judged by, decided torch-free from the output kind and the labels.

Every metric named here is a score in points (0-100, higher is better), so a budget such as `max_metric_drop`
reads the same whatever the metric: accuracy and agreements are percentages, cosine and Spearman's rank
correlation are scaled by 100.

A 'regression' output predicts values (a regression head's score, several targets as [N, K]): its labels are
those values, judged by their rank correlation with the outputs (`label_spearman`, as STS-B is), not by accuracy.
"""

from __future__ import annotations

from typing import Literal

# 'detections': an object detector's class scores and box per query (`compression.detection`)
OutputKind = Literal["logits", "embeddings", "sigmoid", "hidden_states", "regression", "detections"]
OUTPUT_KINDS: tuple[str, ...] = OutputKind.__args__
MetricName = Literal["accuracy", "top1_agreement", "cosine", "similarity_spearman", "bin_f1", "bin_agreement",
                     "soft_dice", "score_spearman", "label_spearman", "detection_map"]
METRICS: tuple[str, ...] = MetricName.__args__

# What each metric compares, and the output kinds it means something for (accuracy needs labels instead).
METRIC_KINDS = {
    "top1_agreement": ("logits", "sigmoid"),
    "cosine": OUTPUT_KINDS,
    "similarity_spearman": ("embeddings",),
    "bin_f1": ("sigmoid",),
    "bin_agreement": ("sigmoid",),
    "soft_dice": ("sigmoid",),
    # of a single score per example ([N] or [N, 1]; per target column for regression): checked where shapes are
    # known
    "score_spearman": ("logits", "regression"),
    "label_spearman": ("regression",),  # against the labels (values), which it needs
    "detection_map": ("detections",),  # against the reference's detections (`compression.detection`)
}
# The metrics that read the evaluation split's labels rather than the reference's outputs.
LABEL_METRICS = ("accuracy", "label_spearman")
# The metric of an output kind when the split has no labels and the spec names none.
DEFAULT_METRIC = {"logits": "top1_agreement", "embeddings": "similarity_spearman", "sigmoid": "soft_dice",
                  "hidden_states": "cosine", "regression": "score_spearman", "detections": "detection_map"}
BOX = 4  # a detection's box (centre x, centre y, width, height) after its class scores
DETECTIONS_SHAPE = ("'detections' outputs are [batch, queries, classes + 4]: a score per class of each object "
                    "query, then its box (centre x, centre y, width, height)")
DETECTIONS_READ_NO_LABELS = ("a detector's outputs are judged against the original model's detections "
                             "(metric 'detection_map'); class labels cannot say where objects are: remove '<split>.y' "
                             "from the dataset")


def label_metric(output_kind: str | None) -> str:
    """What labels measure: accuracy of class labels, or the rank correlation of a regression model's outputs with
    the values it is labelled with."""
    return "label_spearman" if output_kind == "regression" else "accuracy"


def metric_problem(metric: str | None, output_kind: str, has_labels: bool) -> str | None:
    """Why `metric` cannot judge a model with this output kind (None: it can, or is chosen automatically)."""
    if output_kind == "detections" and (has_labels or metric in LABEL_METRICS):
        return DETECTIONS_READ_NO_LABELS
    if metric is None:
        return None
    if metric in LABEL_METRICS and not has_labels:
        return f"metric '{metric}' needs labels ('<split>.y') in the evaluation split"
    if metric == "accuracy":
        return ("metric 'accuracy' counts classes, but a regression model's labels are values: use "
                "'label_spearman' (their rank correlation with the outputs)") if output_kind == "regression" else None
    if output_kind not in METRIC_KINDS[metric]:
        return (f"metric '{metric}' does not apply to {output_kind} outputs; use "
                f"{[m for m, kinds in METRIC_KINDS.items() if output_kind in kinds]}")
    return None


def chosen_metric(metric: str | None, output_kind: str, has_labels: bool) -> str:
    """The metric a model is judged by: the spec's choice, else accuracy with labels, else the kind's default."""
    problem = metric_problem(metric, output_kind, has_labels)
    if problem:
        raise ValueError(problem)
    if metric is not None:
        return metric
    return label_metric(output_kind) if has_labels else DEFAULT_METRIC[output_kind]
