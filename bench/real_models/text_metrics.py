"""Task and fidelity metrics of the text encoders, computed from sentence/reaction vectors (numpy, [rows, dim])."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr

from compression.sentence_pooling import pool


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
    """sentence-transformers' pooling: the mean of the token vectors that are not padding. Outputs that are
    already sentence vectors (a folder declaring its pooling: the worker's program pools) are taken as they are."""
    return (hidden if hidden.dim() == 2 else pool(hidden, attention_mask, "mean")).float().numpy()


def cls_vector(hidden: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
    """rxnfp's fingerprint: the last hidden state of the [CLS] token."""
    return pool(hidden, attention_mask, "cls").float().numpy()


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _unit(a) @ _unit(b).T


def graded_spearman(first: np.ndarray, second: np.ndarray, grades: np.ndarray) -> float:
    """Spearman's rho between cosine(first[i], second[j]) and grades[i, j] over all pairs."""
    return float(spearmanr(cosine_matrix(first, second).ravel(), grades.ravel()).statistic)


def retrieval_accuracy(first: np.ndarray, second: np.ndarray) -> float:
    """Share of queries (both directions) whose most similar candidate is their own pair."""
    scores = cosine_matrix(first, second)
    truth = np.arange(len(first))
    return float(((scores.argmax(1) == truth).mean() + (scores.argmax(0) == truth).mean()) / 2)


def nearest_neighbour_accuracy(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN (cosine) accuracy: how well the vectors separate the classes."""
    scores = cosine_matrix(vectors, vectors)
    np.fill_diagonal(scores, -np.inf)
    return float((labels[scores.argmax(1)] == labels).mean())


def fidelity(vectors: np.ndarray, reference: np.ndarray) -> dict:
    """{"cosine": mean cosine of each vector to fp32's, "similarity_spearman": rank agreement of all pairwise
    similarities with fp32's}: what a user of the embeddings sees change."""
    cosine = float((_unit(vectors) * _unit(reference)).sum(1).mean())
    upper = np.triu_indices(len(vectors), 1)
    rho = spearmanr(cosine_matrix(vectors, vectors)[upper], cosine_matrix(reference, reference)[upper]).statistic
    return {"cosine": cosine, "similarity_spearman": float(rho)}
