"""Fidelity metrics by output kind, and the output kind read from a model."""

import pytest
import torch
from torch import nn

from compression.data import Dataset
from compression.evaluate import evaluate
from compression.fidelity import Fidelity, similarity_spearman, sqnr_db
from compression.io import export_model
from compression.output_kind import detect_output_kind
from tests.compression.output_models import MeanPooledEncoder, PitchNet, encoder_inputs


def test_output_kinds_are_read_from_exported_programs():
    encoder, pitch = MeanPooledEncoder().eval(), PitchNet().eval()
    ids, mask = encoder_inputs(4)
    audio = torch.randn(4, 1, 32)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 5)).eval()
    for model, inputs, kind in ((encoder, (ids, mask), "embeddings"), (pitch, (audio,), "sigmoid"),
                                (classifier, (audio,), "logits")):
        program = export_model(model, inputs).module()
        assert detect_output_kind(program, program(*inputs)) == kind


def test_embeddings_are_judged_by_cosine_and_rank_agreement_of_similarities():
    encoder = MeanPooledEncoder().eval()
    ids, mask = encoder_inputs()
    split = Dataset.from_arrays({"val.input_ids": ids.numpy(), "val.attention_mask": mask.numpy()},
                                ["input_ids", "attention_mask"]).split("val")
    reference = export_model(encoder, (ids[:4], mask[:4])).module()
    same = evaluate(encoder, split, reference, batch_size=16)
    assert same["output_kind"] == "embeddings" and same["metric"] == "similarity_spearman"
    assert same["similarity_spearman"] == pytest.approx(1.0) and same["metric_points"] == pytest.approx(100)
    assert "top1_agreement" not in same and "kl" not in same
    noisy = MeanPooledEncoder().eval()
    noisy.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        noisy.proj.weight.add_(torch.randn_like(noisy.proj.weight) * 0.3)
    slightly = evaluate(noisy, split, reference, batch_size=16)
    assert 0.5 < slightly["similarity_spearman"] < 0.999 and slightly["cosine"] > slightly["similarity_spearman"] - 0.5
    unrelated = evaluate(MeanPooledEncoder().eval(), split, reference, batch_size=16, metric="cosine")
    assert unrelated["metric"] == "cosine" and unrelated["similarity_spearman"] < slightly["similarity_spearman"]


def test_similarity_rank_agreement_ignores_scale_and_sees_a_collapse():
    embeddings = torch.randn(20, 8)
    assert similarity_spearman(embeddings * 3, embeddings) == pytest.approx(1.0)
    assert similarity_spearman(torch.ones(20, 8), embeddings) == 0.0
    with pytest.raises(ValueError, match="at least 3"):
        similarity_spearman(embeddings[:2], embeddings[:2])


def test_sigmoid_outputs_are_judged_by_bins_not_softmax():
    reference = torch.tensor([[0.9, 0.1, 0.7], [0.2, 0.3, 0.1]])
    fidelity = Fidelity("sigmoid")
    fidelity.add(torch.tensor([[0.8, 0.6, 0.2], [0.1, 0.3, 0.2]]), reference)
    metrics = fidelity.result()
    # reference bins on: (0,0), (0,2); output on: (0,0), (0,1): one in common -> F1 = 2 * 1 / (2 + 2)
    assert metrics["bin_f1"] == pytest.approx(0.5)
    assert metrics["mae"] == pytest.approx((0.1 + 0.5 + 0.5 + 0.1 + 0 + 0.1) / 6)
    assert metrics["bin_agreement"] == pytest.approx(4 / 6)
    assert metrics["top1_agreement"] == 1.0 and "kl" not in metrics
    # 2 * sum(p q) / (sum p^2 + sum q^2) = 2 * 1.05 / (1.18 + 1.45)
    assert metrics["soft_dice"] == pytest.approx(2.1 / 2.63)


def _soft_dice_and_f1(output: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    fidelity = Fidelity("sigmoid")
    fidelity.add(output, reference)
    metrics = fidelity.result()
    return metrics["soft_dice"], metrics["bin_f1"]


def test_soft_dice_keeps_a_salience_peak_near_one_half_and_sees_dark_or_dimmed_bins():
    bins = torch.arange(360.0)
    centres = torch.randint(40, 320, (64, 1)).float()
    peaks = torch.exp(-((bins - centres) ** 2) / (2 * 2.0 ** 2))  # a blurred pitch peak in each row
    reference = 0.52 * peaks  # its top just above the threshold, as a pretrained salience map often has it
    slightly_lower = 0.48 * peaks  # the same pitches, the peaks 8 % lower
    dice, f1 = _soft_dice_and_f1(slightly_lower, reference)
    assert f1 == 0.0 and dice > 0.99
    assert _soft_dice_and_f1(reference, reference) == (pytest.approx(1.0), 1.0)
    assert _soft_dice_and_f1(torch.full_like(reference, 0.01), reference)[0] < 0.1  # every bin gone dark
    assert _soft_dice_and_f1(0.2 * reference, reference)[0] < 0.4  # the right bins, a fifth as strong
    assert _soft_dice_and_f1(torch.zeros(2, 5), torch.zeros(2, 5)) == (1.0, 1.0)


def test_logits_report_kl_and_sequence_outputs_count_every_position():
    fidelity = Fidelity("logits")
    logits = torch.randn(2, 3, 5)
    fidelity.add(logits, logits)
    same = fidelity.result()
    assert same["kl"] == pytest.approx(0.0, abs=1e-6) and same["top1_agreement"] == 1.0
    fidelity = Fidelity("logits")
    fidelity.add(torch.zeros(2, 3, 5), logits)
    assert fidelity.result()["kl"] > 0


def test_a_metric_must_fit_the_output_and_the_labels():
    encoder = MeanPooledEncoder().eval()
    ids, mask = encoder_inputs(8)
    split = Dataset.from_arrays({"val.input_ids": ids.numpy(), "val.attention_mask": mask.numpy()},
                                ["input_ids", "attention_mask"]).split("val")
    with pytest.raises(ValueError, match="'top1_agreement' does not apply to embeddings outputs"):
        evaluate(encoder, split, encoder, output_kind="embeddings", metric="top1_agreement")
    with pytest.raises(ValueError, match="'accuracy' needs labels"):
        evaluate(encoder, split, encoder, metric="accuracy")


def test_sequence_outputs_are_logits_only_from_a_head_and_a_classifier_in_unit_range_stays_logits():
    ids = torch.randint(0, 50, (4, 6))
    lm = nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 50)).eval()
    encoder = nn.Sequential(nn.Embedding(50, 8), nn.LayerNorm(8)).eval()
    for model, kind in ((lm, "logits"), (encoder, "hidden_states")):
        program = export_model(model, (ids,)).module()
        assert detect_output_kind(program, program(ids)) == kind
    small = nn.Linear(8, 3).eval()
    with torch.no_grad():
        small.weight.zero_()
        small.bias.copy_(torch.tensor([0.2, 0.3, 0.1]))  # logits that happen to lie in [0, 1]
    x = torch.randn(4, 8)
    program = export_model(small, (x,)).module()
    assert detect_output_kind(program, program(x)) == "logits"
    assert detect_output_kind(small, small(x)) == "sigmoid"  # an ordinary module shows only its values


class _TokenStates(nn.Module):
    """Per-token states [N, L, 8] that follow the ids at real tokens; `pad_noise` scales what padded positions
    hold (the part of a compressed encoder's output no user reads)."""

    def __init__(self, pad_noise: float):
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.pad_noise = pad_noise

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.embed(input_ids)
        padded = (1 - attention_mask).unsqueeze(-1).float()
        return states + padded * self.pad_noise * torch.cos(torch.arange(8.0) * 3 + input_ids.unsqueeze(-1))


def test_token_outputs_are_compared_on_real_tokens_and_pooled_for_rank_agreement():
    torch.manual_seed(0)
    reference = _TokenStates(pad_noise=0.0).eval()
    noisy_pads = _TokenStates(pad_noise=50.0).eval()
    noisy_pads.embed.load_state_dict(reference.embed.state_dict())
    ids = torch.randint(1, 50, (24, 10))
    mask = (torch.arange(10) < torch.randint(2, 10, (24, 1))).long()
    arrays = {"val.input_ids": ids.numpy(), "val.attention_mask": mask.numpy()}
    split = Dataset.from_arrays(arrays, ["input_ids", "attention_mask"]).split("val")
    same_tokens = evaluate(noisy_pads, split, reference, batch_size=8, output_kind="hidden_states")
    assert same_tokens["cosine"] == pytest.approx(1.0, abs=1e-6) and same_tokens["mse"] == pytest.approx(0.0)
    assert same_tokens["similarity_spearman"] == pytest.approx(1.0, abs=1e-6)

    # Without the mask input, the padded positions count (what every job reported before), in the pooled vectors
    # too (the mean over every position, as for an image's tokens).
    unmasked = Dataset.from_arrays({"val.ids": ids.numpy(), "val.m": mask.numpy()}, ["ids", "m"]).split("val")
    counted = evaluate(noisy_pads, unmasked, reference, batch_size=8, output_kind="hidden_states")
    assert counted["cosine"] < 0.9 and counted["similarity_spearman"] < 0.9

    # A difference at real tokens is still seen.
    changed = _TokenStates(pad_noise=0.0).eval()
    assert evaluate(changed, split, reference, batch_size=8, output_kind="hidden_states")["cosine"] < 0.5


def test_sqnr_is_bounded_both_ways_for_json():
    # An upload whose outputs are all zero: the log of 0 raised "math domain error" and crashed the whole job.
    assert sqnr_db(0.0, 1.0) == -200.0 and sqnr_db(1.0, 0.0) == 200.0 and sqnr_db(0.0, 0.0) == 200.0
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)
