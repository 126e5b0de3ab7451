"""The hidden units of a recurrent layer (`nn.LSTM`, `nn.GRU`, `nn.RNN`: one `aten.lstm`/`gru`/`rnn_tanh`/`rnn_relu`
op in an exported graph) as one channel group.

Every layer and direction of such an op has the same hidden size H (the initial state is one (layers x directions,
batch, H) tensor), so a unit is hidden unit c of every layer and direction at once, and the op keeps one hidden size
after pruning. Per layer and direction, unit c owns row c of each gate's block of H rows in `weight_ih` and
`weight_hh` and their biases (4 gates for an LSTM, 3 for a GRU, 1 for a plain RNN), column c of `weight_hh` (the
state read back), and, from the second layer on, column c of each direction's half of `weight_ih` (the layer
below's output, [forward | backward]). The initial state must be the zeros the module makes when none is passed,
whose literal H is rewritten; a state passed in from outside has its own width and keeps the units. The op's
outputs carry the units on: its output's last dimension (one run of H per direction) and the final states' last.
LSTMs with `proj_size` (their `weight_hr` projection) and packed sequences are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import ChannelGroup, SizeLiteral, Slice
from compression.prune.channel_layout import Layout, shape_of

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}  # blocks of H rows in each weight
_ZEROS = {"zeros", "new_zeros"}  # how the module's default initial state appears in the graph


@dataclass
class RecurrentLayer:
    group: ChannelGroup  # the hidden units
    input_columns: list[str]  # the first layer's weight_ih per direction: its columns read the op's input
    outputs: list[Layout]  # where the units sit in each of the op's outputs (output, h_n[, c_n])


def recurrent_layer(node: fx.Node) -> RecurrentLayer | None:
    """The hidden units of the recurrent op `node`, or None where its weights are not the graph's own tensors (or
    it is a form left alone: packed sequences, projections)."""
    name = op_name(node)
    if getattr(node.target, "_overloadname", "") != "input" or len(node.args) < 9:
        return None
    _, state, params, has_biases, layers, _, _, bidirectional, _ = node.args[:9]
    directions = 2 if bidirectional else 1
    per_direction = 4 if has_biases else 2
    if len(params) != layers * directions * per_direction or \
            any(not isinstance(param, fx.Node) or param.op != "get_attr" for param in params):
        return None
    hidden = (shape_of(params[1]) or (0, 0))[1]  # weight_hh is (gates * H, H)
    gates = GATES[name]
    group = ChannelGroup(hidden, unit="hidden units")
    for layer in range(layers):
        for direction in range(directions):
            start = (layer * directions + direction) * per_direction
            weight_ih, weight_hh, *biases = (param.target for param in params[start:start + per_direction])
            for rows in (Slice(weight_ih, 0, outer=gates), Slice(weight_hh, 0, outer=gates)):
                group.producers.append(rows)
                group.slices.append(rows)
            group.slices += [Slice(weight_hh, 1)] + [Slice(bias, 0, outer=gates) for bias in biases]
            if layer:
                group.slices.append(Slice(weight_ih, 1, outer=directions))
    for initial in (state if isinstance(state, (list, tuple)) else [state]):
        if isinstance(initial, fx.Node) and initial.op == "call_function" and op_name(initial) in _ZEROS:
            group.reshapes.append(SizeLiteral(initial, 2, 1, arg=1 if op_name(initial) == "new_zeros" else 0))
        else:
            group.frozen_because.append(f"{name} at {node.name} starts from a state passed in")
    first = [param.target for param in params[:directions * per_direction:per_direction]]
    rank = len(shape_of(node.args[0]) or ())
    finals = 2 if name == "lstm" else 1
    return RecurrentLayer(group, first, [Layout(rank - 1, outer=directions)] + [Layout(2)] * finals)
