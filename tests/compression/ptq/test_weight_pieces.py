"""A packed parameter split into layer weights at every call (MultiheadAttention across two inputs) is stored as
pieces, so every method finds those layers."""

import numpy as np
import torch
from torch import nn

from compression.context import RunContext
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.ptq.weight_pieces import store_weight_pieces
from compression.specs import EvaluationSpec, PTQSpec


class _Decoder(nn.Module):
    """One nn.TransformerDecoderLayer: packed self-attention, and cross-attention whose in_proj is split into the
    query's rows and the key/value's at every call."""

    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, tokens, memory):
        return self.head(self.layer(tokens, memory))


def _example():
    return torch.randn(2, 6, 32), torch.randn(2, 5, 32)


def test_cross_attention_pieces_are_stored_and_compute_the_same():
    torch.manual_seed(0)
    graph = export_model(_Decoder().eval(), _example()).module()
    inputs = (torch.randn(3, 6, 32), torch.randn(3, 5, 32))
    with torch.no_grad():
        before = graph(*inputs)
    assert store_weight_pieces(graph) == [f"layer.multihead_attn.in_proj_{kind}_piece{i}"
                                          for kind in ("weight", "bias") for i in (0, 1)]
    assert "layer.multihead_attn.in_proj_weight" not in dict(graph.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(graph(*inputs), before, rtol=0, atol=0)


def test_a_decoders_cross_attention_projections_are_quantized(tmp_path):
    """They stayed float under int8 PTQ, with no warning: 6 of 8 linear layers were quantized."""
    torch.manual_seed(0)
    save_program(export_model(_Decoder().eval(), _example()), tmp_path / "m.pt2")
    generator = np.random.default_rng(0)
    tokens, memory = (generator.standard_normal((48, length, 32)).astype("float32") for length in (6, 5))
    np.savez(tmp_path / "d.npz", **{"train.tokens": tokens[:32], "val.tokens": tokens[32:],
                                    "train.memory": memory[:32], "val.memory": memory[32:]})
    result = run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", [PTQSpec(calibration_samples=16)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert len(result.baseline["computed_weights_stored"]) == 4
    assert result.final["method_metrics"]["quantized_layers"] == 8
