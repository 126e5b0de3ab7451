"""A masked language model's text (task fill-mask: BERT, RoBERTa, ALBERT, DeBERTa, ModernBERT, ... as their pretrained
checkpoints are saved), made into inputs and labels the way its pretraining judged it.

The job's text has no labels of its own: the worker masks a share of each row's tokens (MASKED_SHARE, BERT's 15 %, at
least one a row), replacing them with the tokenizer's mask token as transformers' fill-mask pipeline feeds them, and
labels those positions with the tokens they held (IGNORED_LABEL everywhere else). The program's output is the logits
over the vocabulary at every position, so the job's accuracy is the share of masked tokens the model fills in right
(masked-LM accuracy) and its cross-entropy the model's masked-LM loss (reported as perplexity). The positions are
drawn once per split from a fixed seed: every stage, and the upload's baseline, fill in the same blanks.
"""

from __future__ import annotations

import numpy as np

from compression.archive.errors import InvalidUpload
from compression.archive.npz import IGNORED_LABEL

MASKED_SHARE = 0.15
MASKING_SEED = 0
NO_MASK_TOKEN = ("task fill-mask fills in the tokenizer's mask token, and this folder's tokenizer has none "
                 "(tokenizer_config.json 'mask_token'): upload the folder with the tokenizer the model was pretrained "
                 "with, or choose task feature-extraction")


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask token id ([MASK], <mask>), refused where it has none."""
    mask = getattr(tokenizer, "mask_token_id", None)
    if not isinstance(mask, int):
        raise InvalidUpload(NO_MASK_TOKEN)
    return mask


def masked_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, special_ids: list[int], mask_id: int,
                  seed: int = MASKING_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(input ids with the masked positions set to `mask_id`, [rows, tokens] labels: the original token there,
    IGNORED_LABEL elsewhere). Only real tokens are masked: not padding (`attention_mask` 0) and not the tokenizer's
    special tokens (`special_ids`: [CLS], [SEP], ...), which the model is never asked to fill in."""
    rng = np.random.default_rng(seed)
    maskable = (attention_mask > 0) & ~np.isin(input_ids, special_ids)
    chosen = (rng.random(input_ids.shape) < MASKED_SHARE) & maskable
    # A short row can draw no position at all: it gets one, so that every row is judged.
    unchosen = maskable.any(axis=1) & ~chosen.any(axis=1)
    for row in np.flatnonzero(unchosen):
        chosen[row, rng.choice(np.flatnonzero(maskable[row]))] = True
    labels = np.where(chosen, input_ids, IGNORED_LABEL).astype(np.int64)
    return np.where(chosen, mask_id, input_ids).astype(np.int64), labels
