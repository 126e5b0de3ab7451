"""Heads of Hugging Face decoders' attention (rotary embeddings, per-head norms, an empty key/value cache and the
key/value repeat of grouped-query attention on the way to `scaled_dot_product_attention`): structured pruning
removes whole key/value heads with their query heads, and the pruned program computes exactly what the same
architecture built with fewer heads computes with the kept rows."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.prune.attention_heads import find_head_groups
from compression.prune.channel_groups import ChannelGroup
from compression.prune.structured import nothing_to_prune, plan_structured, prune_channels
from tests.compression.prune.conftest import LastHidden

HIDDEN, HEAD_DIM = 64, 16


def _decoder(model_type: str, heads: int, kv_heads: int, attention: str = "sdpa"):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=HEAD_DIM,
                                  vocab_size=100, use_cache=False, pad_token_id=0)
    config._attn_implementation = attention
    return AutoModel.from_config(config).eval()


def _exported(model: nn.Module, example: tuple):
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = tuple({0: batch} for _ in example)
    return torch.export.export(model, example, dynamic_shapes=dynamic).module()


@pytest.mark.parametrize("model_type, heads, kv_heads, attention", [
    ("llama", 8, 4, "sdpa"),  # grouped-query attention: 4 units of 2 query heads
    ("qwen2", 8, 2, "sdpa"),  # q/k/v biases
    ("qwen3", 4, 4, "sdpa"),  # q_norm / k_norm over each head, one head per unit
    ("gemma2", 4, 2, "eager"),  # matmul + softmax, the scores soft-capped (tanh) and masked
    ("llama", 4, 2, "eager"),
    ("phi3", 4, 4, "sdpa"),  # one qkv_proj of rows [q | k | v], cut by slices
    ("phi3", 8, 4, "sdpa"),  # ... of 8, 4 and 4 heads (Phi-4-mini's grouped-query runs)
    ("phi3", 6, 2, "eager"),  # ... of 6, 2 and 2: 3 query heads per unit
    ("gemma", 4, 1, "sdpa"),  # multi-query attention (Gemma-2B's): the query heads are the units
    ("gemma", 4, 1, "eager"),
    ("phi3", 4, 1, "sdpa"),  # multi-query with q made with the key/value head, cut by slices
])
def test_pruned_decoder_equals_the_architecture_built_with_fewer_heads(model_type, heads, kv_heads, attention):
    model = _decoder(model_type, heads, kv_heads, attention)
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    graph_module = _exported(LastHidden(model), (ids, mask))
    groups = find_head_groups(graph_module)
    units = kv_heads if kv_heads > 1 else heads  # a key/value head with its query heads; or one query head
    assert [group.size for group in groups] == [units, units]
    assert groups[0].producers[0].name.startswith("model.layers.0.self_attn.q")  # q_proj, or qkv_proj

    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)

    config = model.config.to_dict() | {"num_attention_heads": heads // 2, "num_key_value_heads": max(kv_heads // 2, 1),
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


def test_multi_query_attention_with_enable_gqa_loses_query_heads():
    torch.manual_seed(0)
    model = _GroupedAttention(heads=4, kv_heads=1).eval()
    graph_module = _exported(model, (torch.randn(2, 6, HIDDEN),))
    [group] = find_head_groups(graph_module)
    assert group.size == 4 and {piece.name for piece in group.slices} == {"q.weight", "q.bias", "o.weight"}
    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)
    assert graph_module.q.weight.shape == (2 * HEAD_DIM, HIDDEN) and graph_module.k.weight.shape == (HEAD_DIM, HIDDEN)
    with torch.no_grad():
        for head in set(range(4)) - set(plans[0].keep.tolist()):
            model.o.weight[:, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
        x = torch.randn(3, 6, HIDDEN)
        torch.testing.assert_close(graph_module(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_value_of_its_own_per_head_leaves_the_heads_alone():
    graph_module = _exported(_GroupedAttention(per_head_scale=True).eval(), (torch.randn(2, 6, HIDDEN),))
    assert find_head_groups(graph_module) == []


class _HandWrittenAttention(nn.Module):
    """Attention as tutorials write it: separate projections, `q @ k.transpose(-2, -1) / sqrt(D)`, a causal mask
    by masked_fill, softmax, `@ v`."""

    def __init__(self, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(HIDDEN, heads * HEAD_DIM) for _ in range(3))
        self.o = nn.Linear(heads * HEAD_DIM, HIDDEN)
        self.register_buffer("causal", torch.tril(torch.ones(16, 16, dtype=torch.bool)))

    def forward(self, x):
        batch, length, _ = x.shape
        q, k, v = (layer(x).view(batch, length, self.heads, HEAD_DIM).transpose(1, 2)
                   for layer in (self.q, self.k, self.v))
        scores = q @ k.transpose(-2, -1) / HEAD_DIM ** 0.5
        scores = scores.masked_fill(~self.causal[:length, :length], float("-inf"))
        context = scores.softmax(-1) @ v
        return self.o(context.transpose(1, 2).reshape(batch, length, self.heads * HEAD_DIM))


def test_attention_written_as_matmul_and_softmax_loses_whole_heads():
    torch.manual_seed(0)
    model = _HandWrittenAttention().eval()
    graph_module = _exported(model, (torch.randn(2, 6, HIDDEN),))
    [group] = find_head_groups(graph_module)
    assert group.size == 4
    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)
    kept = plans[0].keep.tolist()
    rows = torch.cat([torch.arange(head * HEAD_DIM, (head + 1) * HEAD_DIM) for head in kept])
    smaller = _HandWrittenAttention(heads=2).eval()
    with torch.no_grad():
        for name in ("q", "k", "v"):
            getattr(smaller, name).weight.copy_(getattr(model, name).weight[rows])
            getattr(smaller, name).bias.copy_(getattr(model, name).bias[rows])
        smaller.o.weight.copy_(model.o.weight[:, rows])
        smaller.o.bias.copy_(model.o.bias)
        x = torch.randn(3, 6, HIDDEN)  # (the length the mask was sliced for is fixed by the export)
        torch.testing.assert_close(graph_module(x), smaller(x), atol=1e-5, rtol=1e-5)


def test_scores_that_leave_the_attention_leave_its_heads_alone():
    class _ReturnsWeights(_HandWrittenAttention):
        def forward(self, x):
            batch, length, _ = x.shape
            q, k, v = (layer(x).view(batch, length, self.heads, HEAD_DIM).transpose(1, 2)
                       for layer in (self.q, self.k, self.v))
            weights = (q @ k.transpose(-2, -1)).softmax(-1)
            context = weights @ v
            return self.o(context.transpose(1, 2).reshape(batch, length, -1)), weights

    graph_module = _exported(_ReturnsWeights().eval(), (torch.randn(2, 6, HIDDEN),))
    assert find_head_groups(graph_module) == []  # the returned weights have a column per head


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_heads_packed_together_in_one_projection_go_whole(attention):
    # GPT-NeoX (Pythia): one query_key_value projection whose rows are [q_h | k_h | v_h] for each head h, cut by
    # chunk(3, -1) once the heads are viewed apart; rotary embeddings on part of each head
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt_neox", hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, vocab_size=100, use_cache=False, rotary_pct=0.5)
    config._attn_implementation = attention
    model = AutoModel.from_config(config).eval()
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    graph_module = _exported(LastHidden(model), (ids, mask))
    groups = find_head_groups(graph_module)
    assert [{piece.name.split(".")[-2:][0]: piece.block for piece in group.slices} for group in groups] == [
        {"query_key_value": 3 * HEAD_DIM, "dense": HEAD_DIM}] * 2
    plans, _ = plan_structured(graph_module, 0.5, exclude=["*mlp*"])  # the heads alone
    prune_channels(graph_module, plans)
    assert graph_module.get_submodule("model.layers.0.attention.query_key_value").weight.shape == (6 * HEAD_DIM,
                                                                                                    HIDDEN)
    # a head that is gone contributes nothing: the upload with its output columns zeroed computes the same
    with torch.no_grad():
        for layer, plan in enumerate(plans):
            for head in set(range(4)) - set(plan.keep.tolist()):
                model.layers[layer].attention.dense.weight[:, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
        ids, mask = torch.randint(0, 100, (3, 7)), torch.ones(3, 7, dtype=torch.long)
        torch.testing.assert_close(graph_module(ids, mask), model(input_ids=ids, attention_mask=mask)
                                   .last_hidden_state, atol=1e-5, rtol=1e-5)


class _PackedProjection(nn.Module):
    """nanoGPT's attention: one projection of rows [q | k | v], cut by `split`, by slices, or (timm's) viewed as
    (3, H, D) and unbound; matmul + softmax."""

    def __init__(self, cut: str, heads: int = 4):
        super().__init__()
        self.cut, self.heads = cut, heads
        self.c_attn = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.c_proj = nn.Linear(HIDDEN, HIDDEN)

    def forward(self, x):
        batch, length, _ = x.shape
        if self.cut == "unbind":
            q, k, v = self.c_attn(x).reshape(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            qkv = self.c_attn(x)
            q, k, v = qkv.split(HIDDEN, dim=2) if self.cut == "split" else (
                qkv[..., :HIDDEN], qkv[..., HIDDEN:2 * HIDDEN], qkv[..., 2 * HIDDEN:])
            q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        context = ((q @ k.transpose(-2, -1)) * HEAD_DIM ** -0.5).softmax(-1) @ v
        return self.c_proj(context.transpose(1, 2).reshape(batch, length, HIDDEN))


@pytest.mark.parametrize("cut", ["split", "slices", "unbind"])
def test_q_k_v_cut_from_one_projection_lose_the_same_heads(cut):
    torch.manual_seed(0)
    model = _PackedProjection(cut).eval()
    graph_module = _exported(model, (torch.randn(2, 6, HIDDEN),))
    [group] = find_head_groups(graph_module)
    assert (group.size, group.producers[0].outer) == (4, 3)  # a head: D rows in each of the three runs
    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)
    assert graph_module.c_attn.weight.shape == (3 * HIDDEN // 2, HIDDEN)  # the split sizes and slice bounds follow
    with torch.no_grad():
        for head in set(range(4)) - set(plans[0].keep.tolist()):
            model.c_proj.weight[:, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
        x = torch.randn(3, 6, HIDDEN)
        torch.testing.assert_close(graph_module(x), model(x), atol=1e-5, rtol=1e-5)


class _FusedGroupedProjection(nn.Module):
    """DBRX's attention: one projection of rows [q | k | v] for 6 query heads over 2 key/value heads, clamped, then
    split into runs of different sizes; the attention repeats the key/value heads itself."""

    def __init__(self, heads: int = 6, kv_heads: int = 2):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.qkv = nn.Linear(HIDDEN, (heads + 2 * kv_heads) * HEAD_DIM)
        self.o = nn.Linear(heads * HEAD_DIM, HIDDEN)

    def forward(self, x):
        batch, length, _ = x.shape
        sizes = [self.heads * HEAD_DIM, self.kv_heads * HEAD_DIM, self.kv_heads * HEAD_DIM]
        q, k, v = self.qkv(x).clamp(min=-2.0, max=2.0).split(sizes, dim=2)
        q, k, v = (t.view(batch, length, -1, HEAD_DIM).transpose(1, 2) for t in (q, k, v))
        context = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.o(context.transpose(1, 2).reshape(batch, length, self.heads * HEAD_DIM))


def test_runs_of_different_head_counts_in_one_projection_lose_a_key_value_head_with_its_query_heads():
    torch.manual_seed(0)
    model = _FusedGroupedProjection().eval()
    graph_module = _exported(model, (torch.randn(2, 6, HIDDEN),))
    [group] = find_head_groups(graph_module)
    # a unit: 3 query heads' rows of the q run, one head's of the k run and of the v run
    assert group.size == 2 and [(piece.block, piece.start) for piece in group.producers] == [
        (3 * HEAD_DIM, 0), (HEAD_DIM, 6 * HEAD_DIM), (HEAD_DIM, 8 * HEAD_DIM)]
    plans, _ = plan_structured(graph_module, 0.5)
    prune_channels(graph_module, plans)
    assert graph_module.qkv.weight.shape == (5 * HEAD_DIM, HIDDEN) and graph_module.qkv.bias.shape == (5 * HEAD_DIM,)
    [kept] = plans[0].keep.tolist()
    with torch.no_grad():
        model.o.weight[:, (1 - kept) * 3 * HEAD_DIM:(2 - kept) * 3 * HEAD_DIM] = 0  # the removed unit's heads
        x = torch.randn(3, 6, HIDDEN)
        torch.testing.assert_close(graph_module(x), model(x), atol=1e-5, rtol=1e-5)


def test_a_fraction_too_small_for_the_key_value_groups_says_which_fraction_removes_one():
    # 2 key/value heads: 0.25 of them rounds down to none; the dry run and the stage both say what would remove one
    graph_module = _exported(_GroupedAttention().eval(), (torch.randn(2, 6, HIDDEN),))
    plans, skipped = plan_structured(graph_module, 0.25)
    assert plans == [] and "groups of 2 heads lose none at this sparsity: raise it to at least 0.5" in \
        nothing_to_prune(0.25, skipped)


def test_a_group_of_one_head_is_not_told_to_raise_the_sparsity_to_one():
    reason = nothing_to_prune(0.5, [ChannelGroup(1, unit="heads")])
    assert "groups with one head keep it at any sparsity" in reason and "at least" not in reason
