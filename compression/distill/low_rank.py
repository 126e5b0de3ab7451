"""Low-rank factorization: every linear/conv weight W becomes two smaller layers from its truncated SVD.

A weight W of shape (out, in, *kernel) is read as the matrix (out, in * prod(kernel)) = U S V^T. At rank r the first
layer has weight sqrt(S_r) V_r^T reshaped to (r, in, *kernel) and keeps W's stride, padding and dilation; the second
is a pointwise layer (out, r, 1, ...) holding U_r sqrt(S_r) and W's bias. Splitting sqrt(S) between the two keeps
both factors on the same scale, which trains better than putting S on one side.

Exported graphs are rewritten node by node (`aten.linear`/`aten.conv2d` -> two ops, new parameters
`weight_down`/`weight_up` registered on the module that held `weight`); plain modules get `nn.Linear`/`nn.Conv2d`
children swapped for `nn.Sequential(down, up)`. Grouped convolutions are left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compression.ptq.addmm_linear import addmm_as_linear_in_place

_LINEAR = torch.ops.aten.linear.default
_CONV2D = torch.ops.aten.conv2d.default


@dataclass(frozen=True)
class Factorization:
    name: str  # the original weight's qualified name
    shape: tuple[int, ...]
    rank: int
    params_before: int
    params_after: int


def rank_for_energy(singular_values: Tensor, energy: float) -> int:
    """Smallest r whose leading singular values keep `energy` of sum(sigma^2)."""
    power = singular_values.double().pow(2)
    kept = power.cumsum(0) / power.sum()
    # A tolerance so that energy=1.0 does not ask for more rank than rounding noise leaves in the tail.
    return min(int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype))) + 1, len(power))


def factorize_weight(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(down, up) with up @ down == the best rank-`rank` approximation of `weight` read as a matrix."""
    out_features = weight.shape[0]
    kernel = weight.shape[2:]
    matrix = weight.detach().reshape(out_features, -1).double()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = s[:rank].sqrt()
    down = (root[:, None] * vh[:rank]).reshape(rank, *weight.shape[1:])
    up = (u[:, :rank] * root).reshape(out_features, rank, *([1] * len(kernel)))
    return down.to(weight.dtype), up.to(weight.dtype)


def _choose_rank(weight: Tensor, rank: int | None, energy: float | None) -> int:
    full = min(weight.shape[0], math.prod(weight.shape[1:]))
    if rank is not None:
        return min(rank, full)
    singular_values = torch.linalg.svdvals(weight.detach().reshape(weight.shape[0], -1).double())
    return rank_for_energy(singular_values, energy)


def _factorized_params(shape: tuple[int, ...], rank: int) -> int:
    return rank * (math.prod(shape[1:]) + shape[0])


def low_rank_factorize(model: nn.Module, *, rank: int | None = None, energy: float | None = None,
                       skip_unprofitable: bool = True) -> list[Factorization]:
    """Factorize `model` in place; returns what was replaced. With `skip_unprofitable` a layer whose two factors
    would hold at least as many parameters as W is kept as it is."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank or energy")
    if isinstance(model, torch.fx.GraphModule):
        return _factorize_graph(model, rank, energy, skip_unprofitable)
    return _factorize_modules(model, rank, energy, skip_unprofitable)


def _plan(name: str, weight: Tensor, rank, energy, skip_unprofitable) -> Factorization | None:
    chosen = _choose_rank(weight, rank, energy)
    before, after = weight.numel(), _factorized_params(tuple(weight.shape), chosen)
    if skip_unprofitable and after >= before:
        return None
    return Factorization(name, tuple(weight.shape), chosen, before, after)


def _factorize_graph(model: torch.fx.GraphModule, rank, energy, skip_unprofitable) -> list[Factorization]:
    addmm_as_linear_in_place(model)  # GPT-2's Conv1D layers (addmm) factorize as the linears they are
    done = []
    for node in list(model.graph.nodes):
        if node.op != "call_function" or node.target not in (_LINEAR, _CONV2D):
            continue
        weight_node = node.args[1]
        if weight_node.op != "get_attr" or len(weight_node.users) != 1:
            continue  # tied or computed weights: factorizing one use would untie them
        if node.target is _CONV2D and _conv_arg(node, 6, "groups", 1) != 1:
            continue
        owner_name, _, attr = weight_node.target.rpartition(".")
        owner = model.get_submodule(owner_name)
        weight = getattr(owner, attr)
        plan = _plan(weight_node.target, weight, rank, energy, skip_unprofitable)
        if plan is None:
            continue
        down, up = factorize_weight(weight, plan.rank)
        down_name, up_name = f"{attr}_down", f"{attr}_up"
        owner.register_parameter(down_name, nn.Parameter(down))
        owner.register_parameter(up_name, nn.Parameter(up))
        prefix = f"{owner_name}." if owner_name else ""
        graph = model.graph
        with graph.inserting_before(node):
            down_node = graph.get_attr(prefix + down_name)
            up_node = graph.get_attr(prefix + up_name)
            bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
            if node.target is _LINEAR:
                first = graph.call_function(_LINEAR, (node.args[0], down_node))
                second = graph.call_function(_LINEAR, (first, up_node, bias))
            else:
                geometry = (_conv_arg(node, 3, "stride", [1, 1]), _conv_arg(node, 4, "padding", [0, 0]),
                            _conv_arg(node, 5, "dilation", [1, 1]))
                first = graph.call_function(_CONV2D, (node.args[0], down_node, None, *geometry, 1))
                second = graph.call_function(_CONV2D, (first, up_node, bias))
        for new_node in (first, second):
            # Keeps module paths resolvable for feature distillation on the student.
            new_node.meta.update({key: value for key, value in node.meta.items() if key == "nn_module_stack"})
        node.replace_all_uses_with(second)
        graph.erase_node(node)
        graph.erase_node(weight_node)
        delattr(owner, attr)
        done.append(plan)
    model.graph.lint()
    model.recompile()
    return done


def _conv_arg(node: torch.fx.Node, position: int, keyword: str, default):
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _factorize_modules(model: nn.Module, rank, energy, skip_unprofitable) -> list[Factorization]:
    done = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, nn.Linear):
                plan = _plan(f"{name}.weight", child.weight, rank, energy, skip_unprofitable)
                if plan is None:
                    continue
                down, up = factorize_weight(child.weight, plan.rank)
                first = nn.Linear(child.in_features, plan.rank, bias=False)
                second = nn.Linear(plan.rank, child.out_features, bias=child.bias is not None)
            elif isinstance(child, nn.Conv2d) and child.groups == 1 and child.padding_mode == "zeros":
                plan = _plan(f"{name}.weight", child.weight, rank, energy, skip_unprofitable)
                if plan is None:
                    continue
                down, up = factorize_weight(child.weight, plan.rank)
                first = nn.Conv2d(child.in_channels, plan.rank, child.kernel_size, child.stride, child.padding,
                                  child.dilation, bias=False)
                second = nn.Conv2d(plan.rank, child.out_channels, 1, bias=child.bias is not None)
            else:
                continue
            with torch.no_grad():
                first.weight.copy_(down)
                second.weight.copy_(up)
                if child.bias is not None:
                    second.bias.copy_(child.bias)
            setattr(parent, child_name, nn.Sequential(first, second).to(child.weight.device))
            done.append(plan)
    return done
