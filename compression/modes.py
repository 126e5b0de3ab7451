"""Train/eval mode for plain modules and for `torch.export` programs alike.

An exported module (`ExportedProgram.module()`) refuses `.train()`/`.eval()`: its dropout and batch-norm ops were
specialised at export time. Their `training` argument is flipped in place in the graph; a program decomposed to
core ATen before upload has one batch-norm op per mode, swapped in place likewise. torchao's
`move_exported_model_to_train/eval` re-traces the graph instead, which costs 0.5-2.5 s per switch, resets dropout
p to 0.5 and deletes `parametrize` containers; it is only the fallback for any other mode-dependent op.
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
# Ops whose train/eval behaviour is a plain argument: op -> position of that argument. Every dropout, in place
# too (transformers' MobileNetV2 has `nn.Dropout(inplace=True)`): a graph with any other mode-dependent op is
# switched by torchao's re-tracing, which rebuilds each batch norm with the default eps and momentum (MobileNetV2's
# eps 0.001 became 1e-5 and its stages computed another function).
_DROPOUTS = ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
_TRAINING_FLAG = {torch.ops.aten.batch_norm.default: 5,
                  **{getattr(torch.ops.aten, name + in_place).default: 2
                     for name in _DROPOUTS for in_place in ("", "_")}}
_BATCH_NORM_MOMENTUM = 6  # aten.batch_norm(input, weight, bias, mean, var, training, momentum, eps, cudnn_enabled)
# Core ATen's batch norm with running statistics: (input, weight, bias, mean, var, training, momentum, eps) trains,
# (input, weight, bias, mean, var, momentum, eps) infers; both return (output, saved mean, saved inverse std).
_DECOMPOSED_TRAINING = torch.ops.aten._native_batch_norm_legit.default
_DECOMPOSED_INFERENCE = torch.ops.aten._native_batch_norm_legit_no_training.default


def is_exported(model: torch.nn.Module) -> bool:
    return model_is_exported(model)


def lacks_traced_shapes(model: torch.nn.Module) -> bool:
    """An exported graph that a stage rewrote by hand (a low-rank student's factorised layers): some of its calls
    carry no traced output (meta "val"), which every analysis that reads shapes needs, so it is re-exported first."""
    return is_exported(model) and any("val" not in node.meta and _returns_value(node) for node in model.graph.nodes
                                      if node.op == "call_function")


def _returns_value(node: torch.fx.Node) -> bool:
    """False for the calls export records without an output (`aten._assert_tensor_metadata`, `_assert_scalar`)."""
    schema = getattr(node.target, "_schema", None)
    return schema is None or bool(schema.returns)


def is_training(model: torch.nn.Module) -> bool:
    if is_exported(model):
        # Uploads are exported in eval mode (the torch.export convention), so an untouched one is in eval mode.
        return getattr(model, _EXPORTED_TRAINING_ATTR, False)
    return model.training


def train_mode(model: torch.nn.Module) -> torch.nn.Module:
    """Put `model` in training mode (dropout on, batch norm uses and updates batch statistics); returns it.

    A batch norm whose momentum is 0 stays in inference mode: its running statistics never move (torchcrepe
    freezes them so; an eval-mode export of `momentum=None` also reads 0), so training it on batch statistics would
    fit a function that inference, which reads the frozen ones, never computes. It trains as the fixed affine map
    inference applies."""
    if not is_exported(model):
        model.train()
        for module in model.modules():
            if frozen_statistics(module):
                module.eval()
        return model
    return _set_exported_mode(model, True)


def frozen_statistics(module: torch.nn.Module) -> bool:
    """A batch-norm module whose running statistics no batch updates (momentum 0)."""
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.momentum == 0


def frozen_statistics_node(node: torch.fx.Node) -> bool:
    """The exported form of `frozen_statistics`: a batch-norm call with running statistics and momentum 0."""
    return _momentum(node) == 0


def _momentum(node: torch.fx.Node) -> float | None:
    """The momentum of a batch-norm call that keeps running statistics; None for any other node."""
    if node.target in (torch.ops.aten.batch_norm.default, _DECOMPOSED_TRAINING):
        return node.args[_BATCH_NORM_MOMENTUM] if len(node.args) > _BATCH_NORM_MOMENTUM else None
    return node.args[5] if node.target is _DECOMPOSED_INFERENCE else None


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


def unmeasured_frozen_batch_norms(model: torch.nn.Module) -> list[str]:
    """Batch norms with momentum 0 whose statistics are still their initial values (mean 0, variance 1 everywhere):
    they were never measured and never will be, so they normalise nothing."""
    if is_exported(model):
        pairs = [(node.args[3].target.removesuffix(".running_mean"),
                  model.get_buffer(node.args[3].target), model.get_buffer(node.args[4].target))
                 for node in model.graph.nodes if frozen_statistics_node(node) and _stores_statistics(node)]
    else:
        pairs = [(name, module.running_mean, module.running_var) for name, module in model.named_modules()
                 if frozen_statistics(module) and module.track_running_stats]
    return [name for name, mean, variance in pairs if not mean.any() and bool((variance == 1).all())]


@contextmanager
def writing_batch_statistics(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Inside the block every batch norm runs in training mode with momentum 1, so each forward pass writes its
    batch's mean and (unbiased) variance into the running buffers, which are yielded; after it the momenta are
    restored and the model is in inference mode. Yields [] when the model has no running statistics."""
    if not is_exported(model):
        norms = [m for m in model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        momenta = [m.momentum for m in norms]
        for module in norms:
            module.momentum = 1.0
            module.train()
        try:
            yield [t for m in norms for t in (m.running_mean, m.running_var)]
        finally:
            for module, momentum in zip(norms, momenta):
                module.momentum = momentum
            model.eval()
        return
    nodes = [n for n in model.graph.nodes if _momentum(n) is not None and _stores_statistics(n)]
    saved = {node: (node.target, node.args) for node in nodes}
    for node in nodes:
        node.target, node.args = _training_form(node, momentum=1.0)
    model.recompile()
    try:
        yield [model.get_buffer(a.target) for node in nodes for a in node.args[3:5]]
    finally:
        for node, (target, args) in saved.items():
            node.target, node.args = target, args
        model.recompile()
        _set_exported_mode(model, False)


def _stores_statistics(node: torch.fx.Node) -> bool:
    """A batch-norm call whose running mean and variance are buffers of the module (not computed values)."""
    return all(isinstance(a, torch.fx.Node) and a.op == "get_attr" for a in node.args[3:5])


def _training_form(node: torch.fx.Node, momentum: float | None = None) -> tuple:
    """(target, args) of a batch-norm call with running statistics in training mode, with `momentum` (its own
    when None); the core-ATen inference op becomes its training op."""
    momentum = _momentum(node) if momentum is None else momentum
    if node.target is torch.ops.aten.batch_norm.default:
        return node.target, node.args[:5] + (True, momentum) + node.args[_BATCH_NORM_MOMENTUM + 1:]
    return _DECOMPOSED_TRAINING, node.args[:5] + (True, momentum, _decomposed_eps(node))


def _decomposed_eps(node: torch.fx.Node) -> float:
    return node.args[7] if node.target is _DECOMPOSED_TRAINING else node.args[6]


def batch_statistics_only(node: torch.fx.Node) -> bool:
    """A batch-norm call without running statistics: it normalises by its input's own statistics in either mode,
    as BiT's weight-standardized convolutions do to their weights (`F.batch_norm(w, None, None, training=True)`).
    Its `training` flag must stay True: in eval mode aten refuses it ("running_mean must be defined")."""
    return node.target is torch.ops.aten.batch_norm.default and node.args[3] is None and node.args[4] is None


def _set_exported_mode(model: torch.fx.GraphModule, training: bool) -> torch.fx.GraphModule:
    mode_dependent = [node for node in model.graph.nodes if node.op == "call_function"
                      and any(op in str(node.target) for op in _MODE_DEPENDENT_OPS)
                      and not batch_statistics_only(node)]
    decomposed = (_DECOMPOSED_TRAINING, _DECOMPOSED_INFERENCE)
    if any(node.target not in _TRAINING_FLAG and node.target not in decomposed for node in mode_dependent):
        return move_exported_model_to_train(model) if training else move_exported_model_to_eval(model)
    changed = False
    for node in mode_dependent:
        if node.target in decomposed:
            changed |= _switch_decomposed_batch_norm(node, training and not frozen_statistics_node(node))
            continue
        position = _TRAINING_FLAG[node.target]
        wanted = training and not frozen_statistics_node(node)
        if len(node.args) > position and node.args[position] != wanted:
            node.args = node.args[:position] + (wanted,) + node.args[position + 1:]
            changed = True
    if changed:
        model.recompile()
    setattr(model, _EXPORTED_TRAINING_ATTR, training)
    return model


def _switch_decomposed_batch_norm(node: torch.fx.Node, training: bool) -> bool:
    """Make a core-ATen batch norm the op of the wanted mode; True when the node changed."""
    if training:
        wanted = _training_form(node)
    else:
        wanted = _DECOMPOSED_INFERENCE, node.args[:5] + (_momentum(node), _decomposed_eps(node))
    if (node.target, node.args) == wanted:
        return False
    node.target, node.args = wanted
    return True
