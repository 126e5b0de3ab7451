"""Which quality metric a job is judged by, decided torch-free from the output kind and the labels.

Every metric named here is a score in points (0-100, higher is better), so a budget such as `max_metric_drop`
reads the same whatever the metric: accuracy and agreements are percentages, cosine and Spearman's rank
correlation are scaled by 100.
"""

from __future__ import annotations

from typing import Literal

OutputKind = Literal["logits", "embeddings", "sigmoid", "hidden_states"]
OUTPUT_KINDS: tuple[str, ...] = OutputKind.__args__
MetricName = Literal["accuracy", "top1_agreement", "cosine", "similarity_spearman", "bin_f1", "bin_agreement",
                     "soft_dice", "score_spearman"]
METRICS: tuple[str, ...] = MetricName.__args__

# What each metric compares, and the output kinds it means something for (accuracy needs labels instead).
METRIC_KINDS = {
    "top1_agreement": ("logits", "sigmoid"),
    "cosine": OUTPUT_KINDS,
    "similarity_spearman": ("embeddings",),
    "bin_f1": ("sigmoid",),
    "bin_agreement": ("sigmoid",),
    "soft_dice": ("sigmoid",),
    "score_spearman": ("logits",),  # of a single score per example ([N] or [N, 1]): checked where shapes are known
}
# The metric of an output kind when the split has no labels and the spec names none.
DEFAULT_METRIC = {"logits": "top1_agreement", "embeddings": "similarity_spearman", "sigmoid": "soft_dice",
                  "hidden_states": "cosine"}


def metric_problem(metric: str | None, output_kind: str, has_labels: bool) -> str | None:
    """Why `metric` cannot judge a model with this output kind (None: it can, or is chosen automatically)."""
    if metric is None:
        return None
    if metric == "accuracy":
        return None if has_labels else "metric 'accuracy' needs labels ('<split>.y') in the evaluation split"
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
    return "accuracy" if has_labels else DEFAULT_METRIC[output_kind]
