"""Train/eval mode for plain modules and for `torch.export` programs alike.

An exported module (`ExportedProgram.module()`) refuses `.train()`/`.eval()`: its dropout and batch-norm ops were
specialised at export time, and torchao's `move_exported_model_to_train/eval` rewrite those graph nodes instead.
The rewrite costs a fraction of a second, so it is skipped for graphs that have no mode-dependent op at all.
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
    if _has_mode_dependent_ops(model):
        return move_exported_model_to_train(model)
    setattr(model, _EXPORTED_TRAINING_ATTR, True)
    return model


def eval_mode(model: torch.nn.Module) -> torch.nn.Module:
    """Put `model` in inference mode (dropout off, batch norm uses running statistics); returns it."""
    if not is_exported(model):
        return model.eval()
    if _has_mode_dependent_ops(model):
        return move_exported_model_to_eval(model)
    setattr(model, _EXPORTED_TRAINING_ATTR, False)
    return model


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


def _has_mode_dependent_ops(model: torch.fx.GraphModule) -> bool:
    return any(node.op == "call_function" and any(op in str(node.target) for op in _MODE_DEPENDENT_OPS)
               for node in model.graph.nodes)
