"""A large model is evaluated on the first examples that fit the compute budget, and the metrics say so."""

import torch

from compression import evaluation_budget
from compression.context import RunContext
from compression.evaluation_budget import flops_per_example
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PTQSpec


def test_flops_are_counted_per_example():
    assert flops_per_example(torch.nn.Linear(4, 3), (torch.zeros(5, 4),)) == 2 * 4 * 3


def test_a_costly_model_is_evaluated_on_capped_rows_unless_the_user_chose(example_files, tmp_path, monkeypatch):
    model_path, dataset_path = example_files  # the digits CNN: 360 validation examples
    # The digits CNN is small; a budget of a few examples' cost makes it "large" here.
    per_example = flops_per_example(torch.export.load(model_path).module(), (torch.zeros(8, 1, 8, 8),))
    monkeypatch.setattr(evaluation_budget, "EVALUATION_FLOPS", per_example * 10)
    ptq = [PTQSpec(calibration_samples=64)]
    result = run_pipeline(model_path, dataset_path, ptq, EvaluationSpec(latency=False), RunContext(), tmp_path / "a")
    assert result.baseline["samples"] == result.final["samples"] == evaluation_budget.MIN_ROWS
    assert "first 128 of 360 examples" in result.baseline["evaluation_capped"]
    assert result.final["evaluation_capped"] == result.baseline["evaluation_capped"]
    chosen = run_pipeline(model_path, dataset_path, ptq, EvaluationSpec(latency=False, max_samples=300),
                          RunContext(), tmp_path / "b")
    assert chosen.final["samples"] == 300 and "evaluation_capped" not in chosen.final
    monkeypatch.setattr(evaluation_budget, "EVALUATION_FLOPS", per_example * 1000)
    whole = run_pipeline(model_path, dataset_path, ptq, EvaluationSpec(latency=False), RunContext(), tmp_path / "c")
    assert whole.final["samples"] == 360 and "evaluation_capped" not in whole.baseline
