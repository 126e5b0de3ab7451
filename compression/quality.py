"""A stage whose own measured quality collapses never ends as a silent success: it ends with a warning, or, when
the job set a budget (`evaluation.max_metric_drop`), it fails the job with its metrics kept."""

from __future__ import annotations

from compression.specs.common import EvaluationSpec


class QualityBudgetExceeded(ValueError):
    """A stage's model fell further below the upload than the job's budget allows (a ValueError: the job's spec,
    not the service, decided it fails)."""

    def __init__(self, index: int, method: str, metrics: dict, budget: float):
        self.metrics = metrics
        super().__init__(f"stage {index} ({method}) dropped {metrics['metric']} by {metrics['metric_drop']:.2f} "
                         f"points ({metrics['metric_points']:.2f} against the upload's "
                         f"{metrics['metric_points'] + metrics['metric_drop']:.2f}), more than the budget "
                         f"evaluation.max_metric_drop = {budget:g}; its metrics are in the job's metrics")


def quality_warnings(baseline: dict, metrics: dict, evaluation: EvaluationSpec) -> list[str]:
    """A warning when the stage's metric dropped more than `evaluation.warn_metric_drop` points below the upload's,
    or to less than half of it."""
    before, after = baseline["metric_points"], metrics["metric_points"]
    drop = before - after
    if drop > evaluation.warn_metric_drop:
        why = f"a drop of {drop:.2f} points; warn_metric_drop is {evaluation.warn_metric_drop:g}"
    elif before > 0 and after < before / 2:  # a small metric (a random model's next-token accuracy) halved
        why = f"less than half of it, a drop of {drop:.2f} points"
    else:
        return []
    return [f"quality collapsed: {metrics['metric']} {after:.2f} against the upload's {before:.2f} ({why}); set "
            "evaluation.max_metric_drop to fail such a job instead"]
