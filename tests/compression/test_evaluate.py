import numpy as np
import pytest
import torch
from torch import nn

from compression.data import Dataset
from compression.evaluate import evaluate, tensor_sqnr_db


class Fixed(nn.Module):
    """Logits = x @ W, so predictions are known in advance."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x @ self.weight


def _split(labels=True):
    x = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    arrays = {"val.x": x}
    if labels:
        arrays["val.y"] = np.array([0, 1, 2, 3, 1, 1])
    return Dataset.from_arrays(arrays, ["x"]).split("val")


def test_accuracy_counts_top1_hits_across_batches():
    model = Fixed(torch.eye(4))
    assert evaluate(model, _split(), batch_size=4)["accuracy"] == pytest.approx(5 / 6)
    assert evaluate(model, _split(), batch_size=4, max_samples=4)["accuracy"] == 1.0


def test_fidelity_without_labels():
    reference = Fixed(torch.eye(4))
    same = evaluate(Fixed(torch.eye(4)), _split(labels=False), reference=reference)
    assert same["top1_agreement"] == 1.0 and same["cosine"] == pytest.approx(1.0) and same["mse"] == 0.0
    assert "accuracy" not in same and same["sqnr_db"] == 200.0
    swapped = torch.eye(4)[[1, 0, 2, 3]]
    other = evaluate(Fixed(swapped), _split(labels=False), reference=reference)
    # rows 0,1,4,5 disagree; each of those has cosine 0 and squared error 2 over 4 logits
    assert other["top1_agreement"] == pytest.approx(2 / 6) and other["cosine"] == pytest.approx(2 / 6)
    assert other["mse"] == pytest.approx(4 * 2 / 24)
    with pytest.raises(ValueError, match="reference"):
        evaluate(reference, _split(labels=False))


def test_tensor_sqnr_matches_definition():
    x = torch.ones(100)
    assert tensor_sqnr_db(x, x + 0.1) == pytest.approx(20.0)
