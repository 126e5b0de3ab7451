"""Heads of Hugging Face decoders' attention (rotary embeddings, per-head norms, an empty key/value cache and the
key/value repeat of grouped-query attention on the way to `scaled_dot_product_attention`): structured pruning
removes whole key/value heads with their query heads, and the pruned program computes exactly what the same
architecture built with fewer heads computes with the kept rows."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.prune.attention_heads import find_head_groups
from compression.prune.structured import plan_structured, prune_channels

HIDDEN, HEAD_DIM = 64, 16


class _LastHidden(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _decoder(model_type: str, heads: int, kv_heads: int, **fields):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=HEAD_DIM,
                                  vocab_size=100, use_cache=False, **fields)
    config._attn_implementation = "sdpa"
    return AutoModel.from_config(config).eval()


def _exported(model: nn.Module, example: tuple):
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = tuple({0: batch} for _ in example)
    return torch.export.export(model, example, dynamic_shapes=dynamic).module()


@pytest.mark.parametrize("model_type, heads, kv_heads", [
    ("llama", 8, 4),  # grouped-query attention: 4 units of 2 query heads
    ("qwen2", 8, 2),  # q/k/v biases
    ("qwen3", 4, 4),  # q_norm / k_norm over each head, one head per unit
])
def test_pruned_decoder_equals_the_architecture_built_with_fewer_heads(model_type, heads, kv_heads):
    model = _decoder(model_type, heads, kv_heads)
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    graph_module = _exported(_LastHidden(model), (ids, mask))
    groups = find_head_groups(graph_module)
    assert [group.size for group in groups] == [kv_heads, kv_heads]
    assert groups[0].producers[0].name == "model.layers.0.self_attn.q_proj.weight"

    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)

    config = model.config.to_dict() | {"num_attention_heads": heads // 2, "num_key_value_heads": kv_heads // 2,
                                       "intermediate_size": 48}
    smaller = type(model)(type(model.config).from_dict(config)).eval()
    pruned = {name.removeprefix("model."): tensor for name, tensor in graph_module.state_dict().items()}
    smaller.load_state_dict(pruned)  # strict: every tensor has the smaller architecture's shape
    for batch in (2, 5):  # the batch stays dynamic after the head counts in the views were rewritten
        ids, mask = torch.randint(0, 100, (batch, 7)), torch.ones(batch, 7, dtype=torch.long)
        mask[0, 5:] = 0
        with torch.no_grad():
            torch.testing.assert_close(graph_module(ids, mask), smaller(input_ids=ids, attention_mask=mask)
                                       .last_hidden_state, atol=1e-5, rtol=1e-5)


class _GroupedAttention(nn.Module):
    """Grouped-query attention written by hand: rotary-like mixing of each head's halves, the attention repeating
    the key/value heads itself (`enable_gqa`), optionally a per-head scale (which ties every head to its own
    value: not prunable here)."""

    def __init__(self, heads: int = 4, kv_heads: int = 2, per_head_scale: bool = False):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.q = nn.Linear(HIDDEN, heads * HEAD_DIM)
        self.k = nn.Linear(HIDDEN, kv_heads * HEAD_DIM)
        self.v = nn.Linear(HIDDEN, kv_heads * HEAD_DIM)
        self.o = nn.Linear(heads * HEAD_DIM, HIDDEN)
        self.scale = nn.Parameter(torch.rand(1, heads, 1, 1) + 0.5) if per_head_scale else None

    def forward(self, x):
        batch, length, _ = x.shape
        q = self.q(x).view(batch, length, self.heads, HEAD_DIM).transpose(1, 2)
        k = self.k(x).view(batch, length, self.kv_heads, HEAD_DIM).transpose(1, 2)
        v = self.v(x).view(batch, length, self.kv_heads, HEAD_DIM).transpose(1, 2)
        angle = torch.arange(length, dtype=x.dtype)[:, None] * torch.linspace(0.1, 1.0, HEAD_DIM)
        q = q * angle.cos() + torch.cat([-q[..., HEAD_DIM // 2:], q[..., :HEAD_DIM // 2]], -1) * angle.sin()
        if self.scale is not None:
            q = q * self.scale
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o(context.transpose(1, 2).reshape(batch, length, self.heads * HEAD_DIM))


def test_enable_gqa_attention_loses_key_value_heads_with_their_query_heads():
    torch.manual_seed(0)
    model = _GroupedAttention().eval()
    example = (torch.randn(2, 6, HIDDEN),)
    graph_module = _exported(model, example)
    [group] = find_head_groups(graph_module)
    assert group.size == 2 and {piece.name: piece.block for piece in group.slices} == {
        "q.weight": 2 * HEAD_DIM, "q.bias": 2 * HEAD_DIM, "k.weight": HEAD_DIM, "k.bias": HEAD_DIM,
        "v.weight": HEAD_DIM, "v.bias": HEAD_DIM, "o.weight": 2 * HEAD_DIM}
    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)
    [kept] = plans[0].keep.tolist()

    smaller = _GroupedAttention(heads=2, kv_heads=1).eval()
    query_rows, key_rows = slice(kept * 2 * HEAD_DIM, (kept + 1) * 2 * HEAD_DIM), slice(kept * HEAD_DIM,
                                                                                          (kept + 1) * HEAD_DIM)
    with torch.no_grad():
        for name, rows in (("q", query_rows), ("k", key_rows), ("v", key_rows)):
            getattr(smaller, name).weight.copy_(getattr(model, name).weight[rows])
            getattr(smaller, name).bias.copy_(getattr(model, name).bias[rows])
        smaller.o.weight.copy_(model.o.weight[:, query_rows])
        smaller.o.bias.copy_(model.o.bias)
        x = torch.randn(3, 6, HIDDEN)
        torch.testing.assert_close(graph_module(x), smaller(x), atol=1e-5, rtol=1e-5)


def test_a_value_of_its_own_per_head_leaves_the_heads_alone():
    graph_module = _exported(_GroupedAttention(per_head_scale=True).eval(), (torch.randn(2, 6, HIDDEN),))
    assert find_head_groups(graph_module) == []
