"""The warning a stage whose quality collapsed ends with says which rule it broke."""

from compression.quality import quality_warnings
from compression.specs import EvaluationSpec


def _warning(before: float, after: float) -> list[str]:
    return quality_warnings({"metric_points": before}, {"metric": "accuracy", "metric_points": after},
                            EvaluationSpec())


def test_a_drop_past_the_budget_names_the_budget():
    [warning] = _warning(90.0, 60.0)
    assert "(a drop of 30.00 points; warn_metric_drop is 20)" in warning


def test_a_small_metric_halved_says_so_rather_than_quoting_a_budget_it_did_not_pass():
    [warning] = _warning(2.78, 0.93)  # a random decoder's next-token accuracy
    assert "(less than half of it, a drop of 1.85 points)" in warning and "warn_metric_drop" not in warning


def test_a_small_drop_warns_nothing():
    assert _warning(90.0, 85.0) == []
