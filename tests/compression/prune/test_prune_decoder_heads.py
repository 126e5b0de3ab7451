"""More attention forms of transformers' decoders and encoders whose heads structured pruning removes: Gemma 3's
norms cast back with `type_as`, Cohere's interleaved rotary (`stack` of each head's halves), Persimmon's
LayerNorm over each head with q/k/v packed per head, RoFormer's eager attention with `reshape_as`, ModernBERT's
[q | k | v] runs unbound after a view, Falcon's packed projections and GPTBigCode's multi-query one. A head that
is gone contributes nothing, so the pruned program must compute what the upload computes with the removed heads'
output-projection columns zeroed."""

import pytest
import torch

from compression.prune.structured import plan_structured, prune_channels
from tests.compression.prune.conftest import LastHidden

HIDDEN, HEAD_DIM = 64, 16


def _pruned_heads(model, loading=None):
    """The model exported (and loaded as a job loads it), and its attention heads pruned at sparsity 0.5."""
    ids, mask = torch.randint(0, 100, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    batch = torch.export.Dim("batch", min=1, max=64)
    graph_module = torch.export.export(LastHidden(model), (ids, mask),
                                       dynamic_shapes=({0: batch}, {0: batch})).module()
    if loading is not None:
        loading(graph_module)
    plans, _ = plan_structured(graph_module, 0.5)
    plans = [plan for plan in plans if plan.group.unit == "heads"]
    prune_channels(graph_module, plans)
    return graph_module, plans


def _assert_computes_the_upload_without_the_removed_heads(graph_module, model, plans) -> None:
    with torch.no_grad():
        for plan in plans:
            output = plan.group.slices[-1]  # the output projection's columns, a unit's block each
            weight = model.get_parameter(output.name.removeprefix("model."))
            for unit in set(range(plan.group.size)) - set(plan.keep.tolist()):
                weight[:, unit * output.block:(unit + 1) * output.block] = 0
        ids, mask = torch.randint(0, 100, (3, 7)), torch.ones(3, 7, dtype=torch.long)
        mask[0, 5:] = 0
        torch.testing.assert_close(graph_module(ids, mask), model(input_ids=ids, attention_mask=mask)
                                   .last_hidden_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type, attention, kv_heads", [
    ("gemma3_text", "sdpa", 2),
    ("cohere", "sdpa", 2),
    ("persimmon", "sdpa", 4),
    ("roformer", "eager", 4),
    ("modernbert", "sdpa", 4),
])
def test_pruned_heads_compute_what_zeroed_heads_do(model_type, attention, kv_heads):
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, hidden_size=HIDDEN, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=kv_heads, head_dim=HEAD_DIM,
                                  vocab_size=100, use_cache=False, pad_token_id=0)
    config._attn_implementation = attention
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():  # weights large enough that a head left in by mistake shows
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(std=0.2)
    graph_module, plans = _pruned_heads(model)
    assert len(plans) == 2 and all(plan.group.size == kv_heads for plan in plans)
    _assert_computes_the_upload_without_the_removed_heads(graph_module, model, plans)


@pytest.mark.parametrize("layout, units, rows_kept", [
    ({"new_decoder_architecture": True, "num_kv_heads": 2}, 2, 4),  # a group: 2 queries, its key and value
    ({"new_decoder_architecture": False, "multi_query": True}, 4, 4),  # 2 of 4 queries, the key and value
    ({"new_decoder_architecture": False, "multi_query": False}, 4, 6),  # 2 heads of [q_h | k_h | v_h]
])
def test_falcons_packed_projections_lose_whole_heads(layout, units, rows_kept):
    # Falcon-40B's layout: one projection whose rows are, per key/value head, its H / KV queries, its key and its
    # value, viewed as (KV, H / KV + 2, D) and cut apart along the middle dimension: a unit is such a group.
    # Falcon-7B's: multi-query, rows [q | k | v] of H heads, one and one, viewed as (H + 2, D) and split along the
    # heads: a unit is a query head. Without either, each head's q, k and v are packed together, viewed as (H, 3,
    # D) by an unflatten. (FalconLinear's `x @ W.T` becomes a linear layer as a job loads the upload.)
    from transformers import AutoConfig, AutoModel

    from compression.ptq.addmm_linear import weight_products_as_linear

    torch.manual_seed(0)
    config = AutoConfig.for_model("falcon", hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                  vocab_size=100, use_cache=False, pad_token_id=0, **layout)
    config._attn_implementation = "sdpa"
    model = AutoModel.from_config(config).eval()
    graph_module, plans = _pruned_heads(model, loading=weight_products_as_linear)
    assert [plan.group.size for plan in plans] == [units, units]
    kept = graph_module.get_parameter("model.h.0.self_attention.query_key_value.weight").shape
    assert kept == (rows_kept * HEAD_DIM, HIDDEN)
    _assert_computes_the_upload_without_the_removed_heads(graph_module, model, plans)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_gptbigcodes_multi_query_projection_loses_query_heads(attention):
    # StarCoder's layout: one projection of rows [q | k | v] for H query heads over one key/value head, given a
    # dimension in front and split; the query heads are the units, the key/value head stays
    from transformers import AutoConfig, AutoModel

    torch.manual_seed(0)
    config = AutoConfig.for_model("gpt_bigcode", n_embd=HIDDEN, n_layer=2, n_head=4, multi_query=True,
                                  vocab_size=100, use_cache=False, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    config._attn_implementation = attention
    model = AutoModel.from_config(config).eval()
    graph_module, plans = _pruned_heads(model)
    assert [plan.group.size for plan in plans] == [4, 4]
    assert graph_module.get_parameter("model.h.0.attn.c_attn.weight").shape == (4 * HEAD_DIM, HIDDEN)
    _assert_computes_the_upload_without_the_removed_heads(graph_module, model, plans)
