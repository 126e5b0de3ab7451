"""One score per example (a reranker's relevance, a regression head's value, a binary classifier's logit) is
judged by the rank correlation of the scores across examples (`score_spearman`), which a Hugging Face sequence
classifier with one label gets by default: the sign agreement top-1 agreement reads from a single logit says
nothing of a regression head whose outputs are all positive."""

import pytest
import torch
from torch import nn

from compression.archive.jsonl import TextSplit
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.fidelity import Fidelity
from compression.llm.pipeline import run_folder_pipeline, scorer_metric
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, zip_bytes


def _fidelity(output: torch.Tensor, reference: torch.Tensor) -> dict:
    fidelity = Fidelity("logits")
    fidelity.add(output, reference)
    return fidelity.result()


def test_scores_are_compared_by_their_ranks_where_the_sign_sees_nothing():
    reference = torch.linspace(1, 5, 40).unsqueeze(1)  # a regression head's values: all positive
    reversed_order = reference.flip(0)
    metrics = _fidelity(reversed_order, reference)
    assert metrics["top1_agreement"] == 1.0  # every sign agrees
    assert metrics["score_spearman"] == pytest.approx(-1.0)
    assert _fidelity(reference * 3 + 1, reference)["score_spearman"] == pytest.approx(1.0)  # ranks only
    assert _fidelity(torch.ones(40), reference.squeeze(1))["score_spearman"] == 0.0  # a constant ranks nothing
    assert "score_spearman" not in _fidelity(torch.randn(40, 3), torch.randn(40, 3))


def test_the_metric_is_refused_for_a_model_with_several_outputs():
    model = nn.Linear(4, 3).eval()
    split = Dataset.from_arrays({"val.x": torch.randn(8, 4).numpy()}, ["x"]).split("val")
    with pytest.raises(ValueError, match="'score_spearman' was not measured on this model's output"):
        evaluate(model, split, model, output_kind="logits", metric="score_spearman")


def test_a_one_label_folder_classifier_defaults_to_it_unless_the_job_or_its_labels_say_otherwise():
    scorer, classifier = {"id2label": {"0": "LABEL_0"}}, {"id2label": {"0": "a", "1": "b"}}
    unlabelled = {"val": TextSplit(4, CORPUS[:4])}
    labelled = {"val": TextSplit(4, CORPUS[:4], [0, 1, 0, 1])}
    default = EvaluationSpec()
    assert scorer_metric(default, "sequence-classification", scorer, unlabelled).metric == "score_spearman"
    assert scorer_metric(default, "sequence-classification", classifier, unlabelled).metric is None
    assert scorer_metric(default, "sequence-classification", scorer, labelled).metric is None
    assert scorer_metric(EvaluationSpec(metric="cosine"), "sequence-classification", scorer,
                         unlabelled).metric == "cosine"
    assert scorer_metric(EvaluationSpec(max_samples=2), "sequence-classification", scorer, unlabelled).metric is None


def test_a_reranker_folder_job_is_judged_by_score_rank_correlation(tmp_path):
    archive = tmp_path / "reranker.zip"
    archive.write_bytes(zip_bytes(bert_folder(tmp_path / "reranker", 1)))
    rows = [f'{{"split": "{split}", "text": "{text}"}}' for split, texts in (("train", CORPUS[:8]),
                                                                              ("val", CORPUS[8:20])) for text in texts]
    (tmp_path / "text.jsonl").write_text("\n".join(rows))
    result = run_folder_pipeline(archive, tmp_path / "text.jsonl", "sequence-classification",
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    for metrics in (result.baseline, result.stages[0].metrics):
        assert metrics["metric"] == "score_spearman"
        assert metrics["metric_points"] == pytest.approx(100 * metrics["score_spearman"])
    assert result.baseline["score_spearman"] == pytest.approx(1.0)
    # A random tiny model's scores lie close together, so int8 rounding reorders some: the ranks see it.
    assert -1 <= result.stages[0].metrics["score_spearman"] < 1
