"""Fidelity of a model's outputs to a reference's, measured the way the output kind is used.

Every kind: mean per-example cosine, MSE and SQNR in dB (10 log10(sum ref^2 / sum (out - ref)^2), the usual
measure of quantization error). Then by kind:
- logits: top-1 agreement and KL(softmax(ref) || softmax(out)) per row (a row per position for [N, L, C]); a
  binary classifier's single logit z is read as the two classes [0, z] (`compression.labels.as_class_logits`),
  and such a single score per example (a binary classifier's, a reranker's relevance, a regression head's value)
  is also compared by the Spearman rank correlation of the scores across examples (`score_spearman`): what a
  ranking by the score sees, where the sign agreement of a regression head's positive outputs says nothing;
- embeddings: Spearman rank correlation between the pairwise cosine similarities of the reference's embeddings
  and those of the model's (what a search or similarity score built on the encoder sees), over the first
  `MAX_SIMILARITY_EXAMPLES` examples;
- sigmoid: mean absolute error, top-1 agreement (the strongest bin, e.g. a pitch bin), the agreement of the bins
  thresholded at 0.5 (the fraction of bins on or off in both), their F1 score (the reference's bins as the
  truth; 1.0 when neither has any), which unlike the agreement does not stay near 1 when a model that should
  light a few of many bins lights none, and the soft Dice score of the probabilities themselves,
  2 sum(p q) / (sum p^2 + sum q^2) over the split (Milletari et al.'s V-Net form; 1.0 for equal outputs or when
  neither lights anything). Soft Dice sees the same collapse as F1 (bins gone dark, or all scaled down) without
  its threshold: on a salience map whose peak sits near 0.5 (CREPE's pitch bins) F1 flips with any change of the
  peak's height, so CREPE after iPQ + int8, its pitch accuracy as good as fp32's, scored 39.6 on F1 and 86.6 on
  soft Dice (issue 10);
- hidden states: cosine; also the Spearman of the mean-pooled vectors, as for embeddings: over the real tokens
  with a token mask (the sentence vector a sentence encoder's users pool from `last_hidden_state`), else over
  the tokens or frames of [N, L, H] (an image transformer's patches, an audio encoder's frames) or the positions
  of a feature map [N, C, H, W] (a convolutional backbone's global average pool);
- detections (an object detector's class scores and box per query, [N, queries, classes + 4]): `detection_map`,
  the mean average precision of the model's detections against the reference's (`compression.detection`).

Token outputs ([N, L, ...]) of a model fed an attention mask are compared on the real tokens only (`add(...,
token_mask=)`): what a model computes at padded positions is never read, and counting it made an encoder's
cosine 93 % where its pooled sentence vectors agreed to 0.994 (issue 10).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from compression.detection import DetectionScore
from compression.labels import as_class_logits
from compression.ranks import column_spearman, spearman
from compression.sentence_pooling import pool

MAX_SIMILARITY_EXAMPLES = 1024
MAX_SCORE_EXAMPLES = 100_000  # scores kept for their rank correlation (800 KB), over all of an example's targets


class Fidelity:
    def __init__(self, output_kind: str):
        self.kind = output_kind
        self.examples = 0
        self.cosine_sum = self.squared_error = self.reference_energy = self.elements = 0.0
        self.agree = self.rows = self.kl_sum = self.abs_error = 0.0
        self.true_positives = self.positives = self.bins_agreeing = 0.0
        self.overlap = self.energy = 0.0
        self.embeddings: list[torch.Tensor] = []
        self.reference_embeddings: list[torch.Tensor] = []
        self.scores: list[torch.Tensor] = []
        self.reference_scores: list[torch.Tensor] = []
        self.detections = DetectionScore() if output_kind == "detections" else None

    def add(self, output: torch.Tensor, reference: torch.Tensor, token_mask: torch.Tensor | None = None) -> None:
        """`token_mask` ([N, L], nonzero at real tokens): compare token outputs [N, L, ...] on real tokens only."""
        output, reference = output.float().cpu(), reference.float().cpu()
        if self.detections is not None:
            self.detections.add(output, reference)
        if self.kind == "regression" or (self.kind == "logits" and is_single_score(output)):
            columns = output[0].numel() if len(output) else 1
            room = MAX_SCORE_EXAMPLES // columns - sum(len(s) for s in self.scores)
            if room > 0:
                self.scores.append(output.reshape(len(output), -1)[:room])
                self.reference_scores.append(reference.reshape(len(reference), -1)[:room])
        if self.kind == "logits" and output.dim() <= 2:  # a binary classifier's single logit: two classes
            output, reference = as_class_logits(output), as_class_logits(reference)
        count = len(output)
        real = _real_tokens(output, token_mask)
        if real is not None:  # zeros at padded positions add nothing to dot products, norms or errors
            shape = (count, real.shape[1]) + (1,) * (output.dim() - 2)
            output, reference = output * real.view(shape), reference * real.view(shape)
        flat, flat_reference = output.reshape(count, -1), reference.reshape(count, -1)
        self.examples += count
        self.cosine_sum += F.cosine_similarity(flat, flat_reference, dim=1).sum().item()
        self.squared_error += (flat - flat_reference).pow(2).sum().item()
        self.reference_energy += flat_reference.pow(2).sum().item()
        self.elements += flat.numel() if real is None else int(real.sum()) * (flat.shape[1] // real.shape[1])
        rows, reference_rows = output.reshape(-1, output.shape[-1]), reference.reshape(-1, output.shape[-1])
        if real is not None:
            rows, reference_rows = rows[real.reshape(-1).bool()], reference_rows[real.reshape(-1).bool()]
        if self.kind in ("logits", "sigmoid"):
            self.agree += (rows.argmax(-1) == reference_rows.argmax(-1)).sum().item()
            self.rows += len(rows)
        if self.kind == "logits":
            self.kl_sum += F.kl_div(F.log_softmax(rows, -1), F.log_softmax(reference_rows, -1), log_target=True,
                                    reduction="sum").item()
        elif self.kind == "sigmoid":
            self.abs_error += (rows - reference_rows).abs().sum().item()
            on, reference_on = rows > 0.5, reference_rows > 0.5
            self.true_positives += (on & reference_on).sum().item()
            self.positives += on.sum().item() + reference_on.sum().item()
            self.bins_agreeing += (on == reference_on).sum().item()
            self.overlap += (rows * reference_rows).sum().item()
            self.energy += rows.pow(2).sum().item() + reference_rows.pow(2).sum().item()
        if self.kind == "embeddings" or (self.kind == "hidden_states" and output.dim() in (3, 4)):
            if real is not None and output.dim() == 3:  # the sentence vectors: mean over the real tokens
                flat, flat_reference = pool(output, real, "mean"), pool(reference, real, "mean")
            elif self.kind == "hidden_states":  # an image's or utterance's vector: the mean over its tokens,
                # frames or (a feature map [N, C, H, W]) positions, as a global average pool reads it
                dims = (1,) if output.dim() == 3 else (2, 3)
                flat, flat_reference = output.mean(dims), reference.mean(dims)
            room = MAX_SIMILARITY_EXAMPLES - sum(len(e) for e in self.embeddings)
            if room > 0:
                self.embeddings.append(flat[:room])
                self.reference_embeddings.append(flat_reference[:room])

    def result(self) -> dict:
        metrics = {"output_kind": self.kind, "cosine": self.cosine_sum / self.examples,
                   "mse": self.squared_error / self.elements, "sqnr_db": sqnr_db(self.reference_energy,
                                                                               self.squared_error)}
        if self.kind in ("logits", "sigmoid"):
            metrics["top1_agreement"] = self.agree / self.rows
        if self.kind == "logits":
            metrics["kl"] = self.kl_sum / self.rows
        elif self.kind == "sigmoid":
            metrics["mae"] = self.abs_error / self.elements
            metrics["bin_f1"] = 2 * self.true_positives / self.positives if self.positives else 1.0
            metrics["bin_agreement"] = self.bins_agreeing / self.elements
            metrics["soft_dice"] = 2 * self.overlap / self.energy if self.energy else 1.0
        if self.embeddings:
            metrics["similarity_spearman"] = similarity_spearman(torch.cat(self.embeddings),
                                                                 torch.cat(self.reference_embeddings))
        if self.detections is not None:
            metrics |= self.detections.result()
        if self.scores and sum(len(s) for s in self.scores) >= 3:
            metrics["score_spearman"] = column_spearman(torch.cat(self.scores), torch.cat(self.reference_scores))
        return metrics


def is_single_score(output: torch.Tensor) -> bool:
    """Whether an output holds one score per example: [N] or [N, 1]."""
    return output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1)


def _real_tokens(output: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask as float [N, L] when `output` is per token ([N, L, ...]) of that mask's shape, else None."""
    if token_mask is None or output.dim() < 3 or tuple(output.shape[:2]) != tuple(token_mask.shape):
        return None
    return (token_mask.cpu() != 0).float()


def similarity_spearman(embeddings: torch.Tensor, reference: torch.Tensor) -> float:
    """Spearman correlation of the pairwise cosine similarities (each unordered pair once) of two embeddings of
    the same examples; 1.0 when every pair is ranked the same. Needs at least 3 examples (3 pairs)."""
    if len(embeddings) < 3:
        raise ValueError("rank agreement of pairwise similarities needs at least 3 evaluation examples")
    pairs = torch.triu_indices(len(embeddings), len(embeddings), offset=1)

    def similarities(e: torch.Tensor) -> torch.Tensor:
        normalized = F.normalize(e.double(), dim=1)
        # Rounded so that equal similarities tie instead of being ranked by rounding noise.
        return torch.round((normalized @ normalized.T)[pairs[0], pairs[1]], decimals=9)

    return spearman(similarities(embeddings), similarities(reference))


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """Signal-to-quantization-noise ratio in dB; capped at 200 dB for an exact match and floored at -200 dB for
    noise over a reference with no energy (an upload whose outputs are all zero: the logarithm of 0 crashed the
    job), as JSON has no infinity."""
    if noise_energy <= signal_energy * 1e-20:
        return 200.0
    if signal_energy <= noise_energy * 1e-20:
        return -200.0
    return 10 * math.log10(signal_energy / noise_energy)


def relative_max_gap(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute difference, relative to `expected`'s largest magnitude: how two programs that should
    compute the same function (a rewrite, a written folder) are compared."""
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def examples_moved(actual: torch.Tensor, expected: torch.Tensor, tolerance: float) -> int:
    """How many examples (rows of the batch) `actual` computes differently from `expected`, by more than
    `tolerance` of `expected`'s largest magnitude."""
    gaps = (actual - expected).abs().flatten(1).amax(1) / expected.abs().max().clamp_min(1e-12)
    return int((gaps > tolerance).sum())
