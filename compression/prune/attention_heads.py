"""Attention heads as channel groups: the heads of q/k/v/o are removed together.

For each `scaled_dot_product_attention` (and each softmax of attention written as matmul + softmax) of an exported
graph, q, k and v are followed back to the linear layers that produce them and every use of their heads forward
to the attention, and the output on to the linear that reads it (`compression.prune.grouped_attention_heads`:
plain view/transpose chains as in BERT, rotary embeddings, per-head norms, a key/value cache, grouped-query
attention, q/k/v cut from one projection as in GPT-NeoX, nanoGPT or timm). A head is then D rows of the q, k and v
weights and biases and D columns of the output projection; literal head counts in the views are rewritten (the
`-1` that Hugging Face models write needs nothing). `torch.nn.MultiheadAttention`, which splits its packed
parameter and folds the heads into the batch, is `compression.prune.packed_attention_heads`' (called with
`need_weights=True`, which computes the attention with `bmm` and `softmax`:
`compression.prune.folded_attention_heads`'). Per-head masks and biases (ALiBi) are left alone.
"""

from __future__ import annotations

from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import ChannelGroup, Slice
from compression.prune.folded_attention_heads import folded_head_group
from compression.prune.grouped_attention_heads import eager_head_group, grouped_head_group
from compression.prune.packed_attention_heads import packed_head_group


def find_head_groups(graph_module: fx.GraphModule) -> list[ChannelGroup]:
    """One group per attention whose heads can be removed. An attention layer whose weights are shared and run
    again (ALBERT runs one layer N times) gives one group for all its calls: one choice of heads, and the sizes
    of every call's reshapes rewritten."""
    groups: dict[frozenset[Slice], ChannelGroup] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and op_name(node) == "scaled_dot_product_attention":
            group = packed_head_group(node) or grouped_head_group(node)
        elif node.op == "call_function" and op_name(node) in ("softmax", "_softmax"):
            # MultiheadAttention returning its weights (bmm and softmax), or attention written as matmul + softmax
            group = folded_head_group(node) or eager_head_group(node)
        else:
            continue
        if group is not None:
            same_weights = groups.setdefault(frozenset(group.slices), group)
            if same_weights is not group:
                same_weights.reshapes += group.reshapes
                same_weights.cuts += group.cuts
    return list(groups.values())
