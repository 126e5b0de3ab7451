"""PTQ's layer decisions (sensitivity, the accuracy budget) are judged by the job's metric for the output kind."""

import pytest
import torch

from compression.data import Dataset
from compression.evaluate import evaluate
from compression.io import export_model
from compression.quant.evaluate import Evaluator
from tests.compression.output_models import MeanPooledEncoder, encoder_inputs


def test_an_encoder_is_judged_by_rank_agreement_of_similarities_not_top1():
    torch.manual_seed(0)
    encoder = MeanPooledEncoder().eval()
    ids, mask = encoder_inputs(64)
    dataset = Dataset.from_arrays({"val.input_ids": ids.numpy(), "val.attention_mask": mask.numpy()},
                                  ["input_ids", "attention_mask"])
    reference = export_model(encoder, (ids[:4], mask[:4])).module()
    evaluator = Evaluator(dataset, "val", None, reference)
    assert (evaluator.output_kind, evaluator.name) == ("embeddings", "similarity_spearman")
    assert evaluator(encoder) == pytest.approx(100.0)
    noisy = MeanPooledEncoder().eval()
    noisy.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        noisy.proj.weight.add_(torch.randn_like(noisy.proj.weight) * 0.5)
    assert 0 < evaluator(noisy) < 99
    by_cosine = Evaluator(dataset, "val", None, reference, metric="cosine")
    assert by_cosine.name == "cosine"
    assert by_cosine(noisy) == pytest.approx(100 * evaluate(noisy, dataset.split("val"), reference)["cosine"])
