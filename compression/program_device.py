"""The device an exported program computes on, where export burnt it into the graph.

An exported graph names the device it was traced on in every op that makes or moves a tensor: `arange(...,
device=cpu)`, `to(..., device=cpu)` for a dtype cast, `_assert_tensor_metadata(..., device=cpu)` (a Hugging Face
BERT has nine such nodes). Moving the module with `.to(device)` moves its parameters only, so a program traced on
the CPU, trained on a GPU, makes its position ids on the CPU and fails ("Tensor device mismatch"), and a program
exported on a GPU (users export where their model lives) fails on a CPU worker. `retarget_devices` rewrites those
arguments to where the module now runs (torch's `move_to_device_pass` does the same for an ExportedProgram but
also moves each node's example value, which aborts the process for a CUDA value in a CPU-only build).
"""

from __future__ import annotations

import torch
from torch import fx


def retarget_devices(module: torch.nn.Module, device: torch.device | str) -> int:
    """Make every graph inside `module` (the module itself, when it is a GraphModule, and its submodules) create and
    move tensors on `device`; returns how many nodes changed."""
    device = torch.device(device)
    changed = 0
    for graph_module in [m for m in module.modules() if isinstance(m, fx.GraphModule)]:
        count = sum(_retarget_node(node, device) for node in graph_module.graph.nodes)
        if count:
            graph_module.recompile()
            changed += count
    return changed


def move_model(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """`model.to(device)`, with the devices its graphs burnt in changed to match."""
    model = model.to(device)
    retarget_devices(model, device)
    return model


def _retarget_node(node: fx.Node, device: torch.device) -> bool:
    changed = False
    burnt = node.kwargs.get("device")
    if isinstance(burnt, (torch.device, str)) and _differs(burnt, device):
        node.kwargs = {**node.kwargs, "device": device}
        changed = True
    if node.op == "call_function" and node.target is torch.ops.aten.to.device and len(node.args) > 1 \
            and isinstance(node.args[1], (torch.device, str)) and _differs(node.args[1], device):
        node.args = (node.args[0], device, *node.args[2:])
        changed = True
    return changed


def _differs(burnt: torch.device | str, device: torch.device) -> bool:
    burnt = torch.device(burnt)
    return burnt.type != device.type or (device.index is not None and burnt.index != device.index)
