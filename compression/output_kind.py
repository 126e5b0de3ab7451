"""What a model's output is: class logits, embeddings, sigmoid probabilities or hidden states.

Fidelity metrics and distillation losses depend on it (top-1 agreement means nothing for a sentence embedding,
softmax means nothing for independent sigmoid bins). A spec can declare it; otherwise it is read from the
reference model's output on real inputs and, for an exported program, from the operation that produces it.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.graph_ops import op_name

# Operations that only move or relabel values: the output's producer is looked for behind them.
_PASS_THROUGH = ("view", "reshape", "_unsafe_view", "clone", "contiguous", "flatten", "squeeze", "unsqueeze",
                 "_to_copy", "to", "alias", "detach", "dropout", "permute", "transpose", "t", "expand", "select",
                 "slice", "getitem")
# A classifier head, applied to each position of a sequence ([N, L, classes]: a language model's logits).
_HEAD_OPS = ("linear", "addmm", "mm", "matmul", "bmm", "log_softmax", "_log_softmax", "softmax", "_softmax")
_CLASSIFIER_OPS = (*_HEAD_OPS, "conv1d", "conv2d", "convolution")
_POOLING_OPS = ("mean", "sum", "div", "amax", "max", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d",
                "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "max_pool1d", "max_pool2d")
_SIGMOID_OPS = ("sigmoid",)


def detect_output_kind(reference: torch.nn.Module, output: torch.Tensor) -> str:
    """The kind of `output`, which `reference` returned for a batch of real inputs (batch first)."""
    producer = _producer(reference)
    if producer in _SIGMOID_OPS:
        return "sigmoid"
    if output.dim() >= 3:
        return "logits" if producer in _HEAD_OPS and output.dim() == 3 else "hidden_states"
    if producer not in _CLASSIFIER_OPS and output.is_floating_point() and output.numel() \
            and bool(((output >= 0) & (output <= 1)).all()) \
            and not torch.allclose(output.sum(-1), torch.ones(()), atol=1e-3):
        return "sigmoid"  # independent probabilities in [0, 1] that are not a distribution (e.g. a clamp)
    if producer in _POOLING_OPS:
        return "embeddings"
    return "logits"


def task_output_kind(declared: str | None, model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> str:
    """The `declared` kind (a job's evaluation.output_kind, carried by its Task), else the kind `model` gives on
    `example_inputs` (moved to the model's device)."""
    if declared is not None:
        return declared
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.no_grad():
        output = model(*(t.to(device) for t in example_inputs))
    while not isinstance(output, torch.Tensor):  # the first tensor of a tuple/list/dict output
        output = next(iter(output.values() if isinstance(output, dict) else output))
    return detect_output_kind(model, output)


def _producer(model: torch.nn.Module) -> str | None:
    """The name of the operation producing the first output of an exported graph ("linear", "div", ...), looking
    through reshapes and copies; None for an ordinary module, whose graph is not known."""
    graph = getattr(model, "graph", None)
    if not isinstance(graph, fx.Graph):
        return None
    output = next((node for node in reversed(graph.nodes) if node.op == "output"), None)
    node = _first_node(output.args[0]) if output is not None else None
    while isinstance(node, fx.Node) and node.op == "call_function":
        name = op_name(node)
        if name not in _PASS_THROUGH:
            return name
        node = next((arg for arg in node.args if isinstance(arg, fx.Node)), None)
    return None


def _first_node(value):
    if isinstance(value, fx.Node):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)) and value:
        return _first_node(value[0])
    return None
