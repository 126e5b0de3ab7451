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


def test_stored_reference_outputs_give_the_same_fidelity_as_running_the_reference():
    from compression.evaluate import KeptOutputs, outputs_of
    reference, other = Fixed(torch.eye(4)), Fixed(torch.eye(4)[[1, 0, 2, 3]])
    split = _split(labels=False)
    kept = outputs_of(reference, split, KeptOutputs(max_bytes=1024), batch_size=4)
    assert [len(batch) for batch in kept.batches] == [4, 2]
    measured = evaluate(other, split, reference=reference, batch_size=4)
    stored = evaluate(other, split, batch_size=4, expected=kept.batches, output_kind="logits")
    assert stored == measured and stored["top1_agreement"] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="do not match batch 0"):
        evaluate(other, split, batch_size=2, expected=kept.batches, output_kind="logits")
    with pytest.raises(ValueError, match="2 stored reference batches for 1 batches"):
        evaluate(other, split, batch_size=8, expected=[torch.zeros(6, 4), torch.zeros(1, 4)], output_kind="logits")
    # Outputs larger than the limit are not kept at all: the caller runs the reference instead.
    assert outputs_of(reference, split, KeptOutputs(max_bytes=80), batch_size=4).batches is None
    again = KeptOutputs(max_bytes=1024)
    evaluate(reference, split, reference=reference, batch_size=4, keep_outputs=again)
    assert all(torch.equal(a, b) for a, b in zip(again.batches, kept.batches, strict=True))
