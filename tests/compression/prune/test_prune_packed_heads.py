"""Heads of torch.nn.MultiheadAttention (packed q/k/v projection), as nn.TransformerEncoderLayer runs it."""

import pytest
import torch
from torch import nn

from compression.io import export_model
from compression.prune.attention_heads import find_head_groups
from compression.prune.structured import plan_structured, prune_channels
from compression.ptq.weight_pieces import store_weight_pieces
from tests.compression.prune.conftest import exported


class _Encoder(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 3)

    def forward(self, tokens):
        return self.head(self.encoder(tokens).mean(1))


def test_multihead_attention_loses_whole_heads_and_zeroed_ones_leave_outputs_unchanged():
    # its heads were never found: the packed projection's unflatten/select and the view of N * H froze them
    torch.manual_seed(0)
    example = (torch.randn(2, 5, 32),)
    graph_module = exported(_Encoder().eval(), example)
    heads = find_head_groups(graph_module)
    assert [group.producers[0].name for group in heads] == [
        f"encoder.layers.{i}.self_attn.in_proj_weight" for i in range(2)]
    # heads 0 and 2 of every layer compute nothing: zero q, k and v rows and the output columns they feed
    with torch.no_grad():
        for i in range(2):
            attention = graph_module.get_submodule(f"encoder.layers.{i}.self_attn")
            for head in (0, 2):
                for third in range(3):
                    rows = slice(third * 32 + head * 8, third * 32 + head * 8 + 8)
                    attention.in_proj_weight[rows] = 0
                    attention.in_proj_bias[rows] = 0
                attention.out_proj.weight[:, head * 8:head * 8 + 8] = 0
    tokens = torch.randn(3, 5, 32)  # another batch: the N * H view is -1 now
    expected = graph_module(tokens)
    plans, _ = plan_structured(graph_module, 0.5, "l2", exclude=["encoder.layers.*.linear1.weight"])
    assert sorted((plan.group.unit, plan.keep.tolist()) for plan in plans) == [("heads", [1, 3])] * 2
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert tuple(smaller.get_parameter("encoder.layers.0.self_attn.in_proj_weight").shape) == (48, 32)
    assert tuple(smaller.get_parameter("encoder.layers.1.self_attn.out_proj.weight").shape) == (32, 16)
    torch.testing.assert_close(smaller(tokens), expected, rtol=1e-5, atol=1e-5)


class _TimmAttention(nn.Module):
    """timm's ViT attention: one qkv linear, reshape(B, N, 3, H, D), permute, unbind, per-head q/k LayerNorm."""

    def __init__(self, dim: int = 32, heads: int = 4, unbind: bool = True):
        super().__init__()
        self.heads, self.unbind = heads, unbind
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.q_norm, self.k_norm = nn.LayerNorm(dim // heads), nn.LayerNorm(dim // heads)

    def forward(self, x):
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0) if self.unbind else (qkv[0], qkv[1], qkv[2])
        x = nn.functional.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, width))


@pytest.mark.parametrize("unbind", [True, False], ids=["unbind", "select"])
def test_timm_style_packed_attention_loses_whole_heads(unbind):
    torch.manual_seed(0)
    example = (torch.randn(2, 5, 32),)
    graph_module = exported(nn.Sequential(_TimmAttention(unbind=unbind), nn.GELU(), nn.Linear(32, 3)).eval(),
                            example)
    assert [group.producers[0].name for group in find_head_groups(graph_module)] == ["0.qkv.weight"]
    with torch.no_grad():
        attention = graph_module.get_submodule("0")
        for head in (1, 2):
            for third in range(3):
                attention.qkv.weight[third * 32 + head * 8:third * 32 + head * 8 + 8] = 0
                attention.qkv.bias[third * 32 + head * 8:third * 32 + head * 8 + 8] = 0
            attention.proj.weight[:, head * 8:head * 8 + 8] = 0
    tokens = torch.randn(3, 5, 32)
    expected = graph_module(tokens)
    plans, _ = plan_structured(graph_module, 0.5, "l2", exclude=["0.proj.weight"])
    assert [(plan.group.unit, plan.keep.tolist()) for plan in plans] == [("heads", [0, 3])]
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert tuple(smaller.get_parameter("0.qkv.weight").shape) == (48, 32)
    torch.testing.assert_close(smaller(tokens), expected, rtol=1e-5, atol=1e-5)


def test_multihead_attention_without_biases_has_its_heads_found():
    attention = nn.MultiheadAttention(32, 4, bias=False, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.head = attention, nn.Linear(32, 3)

        def forward(self, x):
            return self.head(self.attention(x, x, x, need_weights=False)[0].mean(1))

    graph_module = exported(SelfAttention().eval(), (torch.randn(2, 5, 32),))
    groups = find_head_groups(graph_module)
    assert [(group.producers[0].name, group.size) for group in groups] == [("attention.in_proj_weight", 4)]


class _WeightsReturned(nn.Module):
    """MultiheadAttention called as user code often does, `attn(x, x, x)`: need_weights=True computes the
    attention with bmm and softmax (no scaled_dot_product_attention) and returns the head-averaged weights too."""

    def __init__(self):
        super().__init__()
        self.attention, self.head = nn.MultiheadAttention(32, 4, batch_first=True), nn.Linear(32, 3)

    def forward(self, x):
        attended, weights = self.attention(x, x, x)
        return self.head(attended.mean(1)), weights


def test_multihead_attention_returning_its_weights_loses_whole_heads():
    torch.manual_seed(0)
    example = (torch.randn(2, 5, 32),)
    graph_module = exported(_WeightsReturned().eval(), example)
    assert [group.producers[0].name for group in find_head_groups(graph_module)] == ["attention.in_proj_weight"]
    with torch.no_grad():
        attention = graph_module.get_submodule("attention")
        for third in range(3):
            attention.in_proj_weight[third * 32:third * 32 + 8] = 0  # head 0
            attention.in_proj_bias[third * 32:third * 32 + 8] = 0
        attention.out_proj.weight[:, :8] = 0
    tokens = torch.randn(3, 5, 32)
    logits, _ = graph_module(tokens)
    plans, _ = plan_structured(graph_module, 0.25, "l2")
    assert [(plan.group.unit, plan.keep.tolist()) for plan in plans] == [("heads", [1, 2, 3])]
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    pruned_logits, weights = smaller(tokens)
    torch.testing.assert_close(pruned_logits, logits, rtol=1e-5, atol=1e-5)
    assert weights.shape == (3, 5, 5)  # still averaged over the heads left


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 3)

    def forward(self, tokens, memory):
        return self.head(self.layer(tokens, memory).mean(1))


def test_cross_attention_loses_whole_heads_once_its_packed_projection_is_stored_as_pieces():
    # its in_proj is split at every call into the query's rows and the key/value's; stored as two pieces at load
    # (compression.ptq.weight_pieces), a head is D rows of the query piece, D of each half of the key/value piece
    torch.manual_seed(0)
    example = (torch.randn(2, 6, 32), torch.randn(2, 5, 32))
    graph_module = exported(_Decoder().eval(), example)
    store_weight_pieces(graph_module)
    groups = {group.producers[0].name: group for group in find_head_groups(graph_module)}
    assert set(groups) == {"layer.self_attn.in_proj_weight", "layer.multihead_attn.in_proj_weight_piece0"}
    with torch.no_grad():
        cross = graph_module.get_submodule("layer.multihead_attn")
        for name, parts in (("in_proj_weight_piece0", 1), ("in_proj_bias_piece0", 1), ("in_proj_weight_piece1", 2),
                            ("in_proj_bias_piece1", 2)):
            for part in range(parts):
                getattr(cross, name)[part * 32 + 8:part * 32 + 16] = 0  # head 1
        cross.out_proj.weight[:, 8:16] = 0
    inputs = (torch.randn(3, 6, 32), torch.randn(3, 5, 32))
    expected = graph_module(*inputs)
    plans, _ = plan_structured(graph_module, 0.25, "l2", exclude=["layer.linear1.weight", "layer.self_attn.*"])
    assert [(plan.group.unit, plan.keep.tolist()) for plan in plans] == [("heads", [0, 2, 3])]
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert tuple(smaller.get_parameter("layer.multihead_attn.in_proj_weight_piece1").shape) == (48, 32)
    torch.testing.assert_close(smaller(*inputs), expected, rtol=1e-5, atol=1e-5)


def test_multihead_attention_with_its_own_key_and_value_widths_has_its_heads_found():
    class KeyValueWidths(nn.Module):  # kdim/vdim: q, k and v each from a projection weight of its own
        def __init__(self):
            super().__init__()
            self.attention, self.head = nn.MultiheadAttention(32, 4, kdim=16, vdim=16, batch_first=True), \
                nn.Linear(32, 3)

        def forward(self, queries, memory):
            return self.head(self.attention(queries, memory, memory, need_weights=False)[0].mean(1))

    graph_module = exported(KeyValueWidths().eval(), (torch.randn(2, 6, 32), torch.randn(2, 5, 16)))
    # its packed bias is chunked into the three projections' at every call: stored as pieces first, as at load
    assert store_weight_pieces(graph_module) == [f"attention.in_proj_bias_piece{i}" for i in range(3)]
    [group] = find_head_groups(graph_module)
    assert [producer.name for producer in group.producers] == [
        f"attention.{kind}_proj_weight" for kind in ("q", "k", "v")]
