"""Attention heads of `torch.nn.MultiheadAttention` called with `need_weights=True` (its default: `attn(x, x,
x)[0]` in user code), as channel groups.

That call does not use `scaled_dot_product_attention`: the heads stay folded into the batch (`view(L, N * H, D)`,
`transpose(0, 1)`), q is scaled by a number, the scores are `bmm(q, k.transpose(-2, -1))`, then `softmax(-1)`, the
context `bmm(weights, v)`, `transpose(0, 1)` and `reshape(L * N, E)` into `out_proj`; the attention weights it
returns besides are a `view(N, H, L, L)` of the softmax, averaged over the heads. The packed projection and the
output are matched as in `compression.prune.packed_attention_heads`, and the H of that view rewritten too.
"""

from __future__ import annotations

from torch import fx

from compression.prune.channel_groups import ChannelGroup, SizeLiteral
from compression.prune.channel_layout import shape_of
from compression.prune.packed_attention_heads import (
    folded_heads,
    head_group,
    is_call,
    merged_heads,
    packed_projection,
    sole_user,
)


def folded_head_group(softmax: fx.Node) -> ChannelGroup | None:
    """The heads of the MultiheadAttention whose attention weights are `softmax`, or None."""
    if not (is_call(softmax, "softmax") or is_call(softmax, "_softmax")) or softmax.args[1] not in (-1, 2):
        return None
    scores = softmax.args[0]
    contexts = [user for user in softmax.users if is_call(user, "bmm") and user.args[0] is softmax]
    if not is_call(scores, "bmm") or sole_user(scores) is None or len(contexts) != 1:
        return None
    context = contexts[0]
    query, key = scores.args
    if is_call(query, "mul") and isinstance(query.args[1], (int, float)) and sole_user(query) is not None:
        query = query.args[0]  # q * D ** -0.5: a number, the same for every head
    if not is_call(key, "transpose", -2, -1) or sole_user(key) is None:
        return None
    head_dim, literals, packed = (shape_of(context) or (None,))[-1], [], set()
    if not isinstance(head_dim, int):
        return None
    for position, side in enumerate((query, key.args[0], context.args[1])):
        source = folded_heads(side, head_dim, literals)
        packed.add(source.args[0] if is_call(source, "select", 0, position) else None)
    if None in packed or len(packed) != 1:
        return None
    packed = packed.pop()
    width = (shape_of(packed) or (None,))[-1]
    if not isinstance(width, int) or width % head_dim:
        return None
    heads = width // head_dim
    projection = packed_projection(packed, 3, width, head_dim, literals)
    output = merged_heads(context, ("transpose", 0, 1), width, head_dim, literals)
    if projection is None or output is None:
        return None
    for user in softmax.users:  # the weights returned: view(N, H, L, L), then averaged over H
        if user is not context:
            if not is_call(user, "view") or len(user.args[1]) != 4 or user.args[1][1] != heads:
                return None
            literals.append(SizeLiteral(user, 1, 1))
    return head_group(heads, head_dim, [(projection, 3)], output, literals)

