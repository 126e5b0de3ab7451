"""Train/eval mode for plain modules and for `torch.export` programs alike.

An exported module (`ExportedProgram.module()`) refuses `.train()`/`.eval()`: its dropout and batch-norm ops were
specialised at export time. Their `training` argument is flipped in place in the graph. torchao's
`move_exported_model_to_train/eval` re-traces the graph instead, which costs 0.5-2.5 s per switch, resets dropout
p to 0.5 and deletes `parametrize` containers; it is only the fallback for batch-norm variants without a flag.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
from torchao.quantization.pt2e.export_utils import model_is_exported

# Set by torchao's move_exported_model_to_* to remember the mode of an exported module.
_EXPORTED_TRAINING_ATTR = "_exported_training"
_MODE_DEPENDENT_OPS = ("batch_norm", "dropout")
# Ops whose train/eval behaviour is a plain argument: op -> position of that argument.
_TRAINING_FLAG = {torch.ops.aten.batch_norm.default: 5, torch.ops.aten.dropout.default: 2}


def is_exported(model: torch.nn.Module) -> bool:
    return model_is_exported(model)


def is_training(model: torch.nn.Module) -> bool:
    if is_exported(model):
        # Uploads are exported in eval mode (the torch.export convention), so an untouched one is in eval mode.
        return getattr(model, _EXPORTED_TRAINING_ATTR, False)
    return model.training


def train_mode(model: torch.nn.Module) -> torch.nn.Module:
    """Put `model` in training mode (dropout on, batch norm uses and updates batch statistics); returns it."""
    if not is_exported(model):
        return model.train()
    return _set_exported_mode(model, True)


def eval_mode(model: torch.nn.Module) -> torch.nn.Module:
    """Put `model` in inference mode (dropout off, batch norm uses running statistics); returns it."""
    if not is_exported(model):
        return model.eval()
    return _set_exported_mode(model, False)


def set_mode(model: torch.nn.Module, training: bool) -> torch.nn.Module:
    return train_mode(model) if training else eval_mode(model)


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and no autograd inside the block; the model's previous mode is restored after it."""
    was_training = is_training(model)
    eval_mode(model)
    try:
        with torch.no_grad():
            yield model
    finally:
        if was_training:
            train_mode(model)


def _set_exported_mode(model: torch.fx.GraphModule, training: bool) -> torch.fx.GraphModule:
    mode_dependent = [node for node in model.graph.nodes if node.op == "call_function"
                      and any(op in str(node.target) for op in _MODE_DEPENDENT_OPS)]
    if any(node.target not in _TRAINING_FLAG for node in mode_dependent):
        return move_exported_model_to_train(model) if training else move_exported_model_to_eval(model)
    changed = False
    for node in mode_dependent:
        position = _TRAINING_FLAG[node.target]
        if len(node.args) > position and node.args[position] != training:
            node.args = node.args[:position] + (training,) + node.args[position + 1:]
            changed = True
    if changed:
        model.recompile()
    setattr(model, _EXPORTED_TRAINING_ATTR, training)
    return model
