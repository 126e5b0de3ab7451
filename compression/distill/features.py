"""Capturing intermediate values by name, for feature distillation.

A name is either a module path of the model as built before export (`named_modules()`: 'layer2', 'layer2.0.conv1')
or, on an exported graph, an FX node name ('relu_3', see `print(model.graph)`). Module paths are the stable
choice: a torchao train/eval rewrite (the fallback of `compression.modes`) renames the batch-norm nodes it replaces.

On a plain module a module path is captured with a forward hook. An exported module never calls its submodules
(they only hold parameters), so there a module path means the last operation recorded inside that module
(`node.meta["nn_module_stack"]`, or the owner of a parameter it reads), and the value is captured by a pass that
routes the node's output through an identity "tap" module; the taps are removed on exit, leaving the graph
computing what it computed before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

_TAP_PREFIX = "_distill_tap_"


class _Tap(nn.Module):
    """Identity that remembers the value flowing through it."""

    def __init__(self, store: dict[str, Tensor], key: str):
        super().__init__()
        self.store = store
        self.key = key

    def forward(self, value: Tensor) -> Tensor:
        self.store[self.key] = value
        return value


def _module_paths_of(node: torch.fx.Node) -> set[str]:
    """Module paths a node belongs to: its recorded module stack, plus the owners (and their ancestors) of the
    parameters it reads. The second source matters because a torchao train/eval rewrite of batch norm drops the
    stack of the nodes it replaces, while their parameters still say where they came from."""
    paths = {path for path, _type in node.meta.get("nn_module_stack", {}).values()}
    for argument in node.all_input_nodes:
        if argument.op == "get_attr":
            parts = str(argument.target).split(".")[:-1]
            paths.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    return paths


def resolve_node(graph_module: torch.fx.GraphModule, name: str) -> torch.fx.Node:
    """The node whose output `name` designates (an FX node name, else the last op inside module path `name`)."""
    computing = [node for node in graph_module.graph.nodes if node.op in ("call_function", "call_module")
                 and not str(node.target).startswith(_TAP_PREFIX)]
    for node in computing:
        if node.name == name:
            return node
    inside = [node for node in computing if name in _module_paths_of(node)]
    if inside:
        return inside[-1]
    modules = sorted({path for node in computing for path in _module_paths_of(node) if path})
    raise ValueError(f"no node or module named '{name}' in the graph; module paths: {modules[:40]}; node names "
                     f"are listed by print(model.graph)")


@contextmanager
def capture_features(model: nn.Module, names: list[str]) -> Iterator[dict[str, Tensor]]:
    """While inside the block, every forward of `model` stores the values designated by `names` in the yielded
    dict (keyed by name; tensors keep their autograd history)."""
    store: dict[str, Tensor] = {}
    if not names:
        yield store
        return
    if isinstance(model, torch.fx.GraphModule):
        with _graph_taps(model, names, store):
            yield store
    else:
        with _module_hooks(model, names, store):
            yield store


@contextmanager
def _module_hooks(model: nn.Module, names: list[str], store: dict[str, Tensor]):
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ValueError(f"no module named {missing}; module paths: {sorted(modules)[:40]}")
    handles = [modules[name].register_forward_hook(lambda _m, _i, output, key=name: store.__setitem__(key, output))
               for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _graph_taps(model: torch.fx.GraphModule, names: list[str], store: dict[str, Tensor]):
    graph = model.graph
    tap_names = []
    try:
        for index, name in enumerate(dict.fromkeys(names)):
            node = resolve_node(model, name)
            tap_name = f"{_TAP_PREFIX}{index}"
            model.add_submodule(tap_name, _Tap(store, name))
            tap_names.append(tap_name)
            with graph.inserting_after(node):
                tap = graph.call_module(tap_name, (node,))
            # The tap sits in the data path (everything downstream reads it) so that dead-code elimination (as in
            # torchao's train/eval rewrite) cannot drop it.
            node.replace_all_uses_with(tap, delete_user_cb=lambda user: user is not tap)
        model.recompile()
        yield
    finally:
        for tap in [node for node in graph.nodes if node.op == "call_module" and node.target in tap_names]:
            tap.replace_all_uses_with(tap.args[0])
            graph.erase_node(tap)
        for tap_name in tap_names:
            delattr(model, tap_name)
        model.recompile()


def channels_of(feature: Tensor) -> int:
    """Width of a feature: the channel dim of an [N, C, H, W] map, else the last dim."""
    return feature.shape[1] if feature.dim() == 4 else feature.shape[-1]


class Projection(nn.Module):
    """Learned map from student width to teacher width: a 1x1 conv for [N, C, H, W] maps, else a linear layer on
    the last dim. Its weights are trained with the student and thrown away afterwards."""

    def __init__(self, student_channels: int, teacher_channels: int, spatial: bool):
        super().__init__()
        self.map = (nn.Conv2d(student_channels, teacher_channels, 1, bias=False) if spatial
                    else nn.Linear(student_channels, teacher_channels, bias=False))

    def forward(self, feature: Tensor) -> Tensor:
        return self.map(feature)


def projection_for(student_feature: Tensor, teacher_feature: Tensor) -> nn.Module:
    """Identity when the widths agree, else a learned `Projection`."""
    student_channels, teacher_channels = channels_of(student_feature), channels_of(teacher_feature)
    if student_channels == teacher_channels:
        return nn.Identity()
    return Projection(student_channels, teacher_channels, spatial=student_feature.dim() == 4)
