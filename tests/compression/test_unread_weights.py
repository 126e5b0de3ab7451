"""Weights no operation of the upload reads (a pooler under last_hidden_state, a dual encoder's other tower) are
left out before any stage: torch.export keeps every parameter of the module, and pruning, which picks every 2-D
weight, spent its sparsity on them and shipped them pruned in the folder (a CLIP's unused text tower, 70 %
zeros)."""

import numpy as np
import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PruneSpec


class _WithUnusedLayer(nn.Module):
    """A program that holds a layer its forward never calls (a pooler under last_hidden_state, a dual encoder's
    other tower): torch.export keeps its weights, read or not."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 4)
        self.unused = nn.Linear(8, 64)

    def forward(self, x):
        return self.layer(x)


def test_weights_no_operation_reads_are_left_out_of_every_stage(tmp_path):
    x = torch.randn(4, 8)
    save_program(export_model(_WithUnusedLayer().eval(), (x,)), tmp_path / "model.pt2")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", **{f"{split}.x": rng.normal(size=(8, 8)).astype(np.float32)
                                       for split in ("train", "val")})
    result = run_pipeline(tmp_path / "model.pt2", tmp_path / "data.npz", [PruneSpec(sparsity=0.5)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage = result.stages[0]
    assert not any("unused" in name for name, _ in stage.model.named_parameters())
    weight = dict(stage.model.named_parameters())["layer.weight"]
    assert (weight == 0).float().mean() == pytest.approx(0.5, abs=0.05)  # the sparsity went to the read layer


def test_a_folders_program_stores_no_weight_it_never_reads(tmp_path):
    """A Hugging Face folder's float program is the one the job's sizes are measured against: the weights dead code
    left unread (the pooler, a next-sentence head, LUKE's entity table) are not stored in it."""
    from compression.io import load_program
    from compression.unread_weights import drop_unread_weights

    x = torch.randn(4, 8)
    model = _WithUnusedLayer().eval()
    program, gone = drop_unread_weights(export_model(model, (x,)))
    assert gone == ["unused.bias", "unused.weight"]
    assert set(program.state_dict) == {"layer.weight", "layer.bias"}
    loaded = load_program(save_program(program, tmp_path / "model.pt2"))
    assert torch.equal(loaded.module()(x), model(x))
    assert drop_unread_weights(loaded)[1] == []


class _TiedUnread(nn.Module):
    """A tied pair whose forward reads one name (a causal LM's embeddings and output layer, as export lifts them)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 8)
        self.tied = nn.Linear(8, 8)
        self.tied.weight = self.layer.weight

    def forward(self, x):
        return self.layer(x)


def test_a_tied_name_stays_with_the_tensor_it_shares():
    from compression.unread_weights import drop_unread_weights

    x = torch.randn(2, 8)
    program, gone = drop_unread_weights(export_model(_TiedUnread().eval(), (x,)))
    assert gone == ["tied.bias"]
    assert {"layer.weight", "layer.bias"} <= set(program.state_dict) and "tied.bias" not in program.state_dict
