"""Which of a decoder block's linear layers AWQ can scale together, and where their scales fold, found from the
block's own forward rather than from a table of module names.

A scaling group is every linear that reads one tensor (q/k/v after the attention norm; gate/up after the MLP
norm; Phi's q/k/v and fc1 after its one norm; Phi-3's fused qkv_proj alone; a mixture's experts after the MLP
norm). Its scales fold into what produced that tensor: a module with a weight (a norm) whose output it is, or else
a linear layer, or a slice of its output rows, that can take 1/s while the group's columns take s with the
block's output unchanged: v before o without grouped-query attention, up (or the up half of a fused gate_up)
before down in a gated MLP, fc1 before fc2 across a ReLU (never across GELU, SiLU or a squared ReLU, which do
not commute with scaling). Modules that read the tensor but are not quantized (a router, whether a linear layer
kept float or a module with its own 2-D weight) take s in their columns too, and are left out of the search.
Each fold is tried with random scales on a calibration window and kept only if the block computes what it did,
so an arrangement no rule foresaw (a norm whose output something else also reads, a weight the norm does not
multiply by, a post-norm block whose q/k/v read the raw residual) leaves that group unscaled instead of changing
the model. The group's search is scored on the smallest module that holds all of its linears and runs as a
module (the attention for q/k/v, the linear itself for o or down, the whole block for Phi's parallel attention
and MLP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from compression.llm.awq import fold_scales
from compression.llm.model import run_block

# Linears whose output goes through the attention's softmax: their clipping error is amplified there, so AWQ
# does not clip them (AutoAWQ skips "q_", "k_", "query", "key" and "Wqkv" the same way).
_SOFTMAX_INPUT = re.compile(r"(^|[._])(q|k|qk|qkv|query|key|query_key_value|c_attn|wqkv)(_proj)?$", re.IGNORECASE)
# A fold that keeps the block's function moves its float32 output by rounding only, one that does not by far more:
# on the first blocks of 14 of the sweep's tiny models, at most 5.8e-7 of what the block adds to its input for the
# 36 folds kept, at least 9.2e-3 for the 29 refused (most by tens of percent).
FOLD_TOLERANCE = 1e-3
MAX_FOLD_TRIALS = 6  # places tried per group: the norm, then up to 5 earlier layers or row slices


@dataclass(frozen=True)
class ScalingGroup:
    previous: str  # the module the scales fold into: a norm whose output the group reads, or a linear feeding it
    linears: tuple[str, ...]  # the quantized linears reading that tensor, in call order
    scored: str  # the module whose output scores the search ("" is the block itself)
    rows: tuple[int, int] | None = None  # the slice of a linear `previous`'s output rows that the group reads
    passengers: tuple[str, ...] = ()  # readers that are not quantized: they take the scales, not the rounding

    @property
    def folded_into(self) -> str:
        return f"{self.previous}[{self.rows[0]}:{self.rows[1]}]" if self.rows else self.previous


@dataclass
class BlockGroups:
    scaled: list[ScalingGroup]
    unscaled: list[tuple[str, ...]]  # groups no fold kept the block's function for: quantized without scales
    output: torch.Tensor  # the block's output on the window before any fold, to check the folds against


def clipped(name: str) -> bool:
    return not _SOFTMAX_INPUT.search(name)


def _key(tensor: torch.Tensor) -> tuple:
    # Every recorded tensor stays alive until the grouping is done, so no two share storage by reuse.
    return tensor.data_ptr(), tensor.numel(), tensor.dtype


def _first_argument(args: tuple, kwargs: dict) -> torch.Tensor | None:
    x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
    return x if isinstance(x, torch.Tensor) else None


def _trace(block: nn.Module, hidden: torch.Tensor,
           kwargs: dict) -> tuple[list[tuple[str, tuple]], dict, set[str], torch.Tensor]:
    """One run of the block: (reader name, input key) in call order, for the linears and the other modules with a
    2-D weight (routers); {output key: module name} of the modules with a 1-D weight (the norms); the names of
    the modules called; and the block's output."""
    inputs: list[tuple[str, tuple]] = []
    norm_outputs: dict[tuple, str] = {}
    called: set[str] = set()
    kept: list[torch.Tensor] = []

    def record_input(name):
        def hook(_, args, kw):
            if (x := _first_argument(args, kw)) is not None:
                kept.append(x)
                inputs.append((name, _key(x)))
        return hook

    def record_output(name):
        def hook(_, __, output):
            if isinstance(output, torch.Tensor):
                kept.append(output)
                norm_outputs.setdefault(_key(output), name)
        return hook

    hooks = []
    for name, module in block.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(lambda *_, name=name: called.add(name)))
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        if isinstance(module, nn.Linear) or weight.dim() == 2:
            hooks.append(module.register_forward_pre_hook(record_input(name), with_kwargs=True))
        elif weight.dim() == 1:
            hooks.append(module.register_forward_hook(record_output(name)))
    try:
        output = run_block(block, [hidden], [kwargs])[0]
    finally:
        for hook in hooks:
            hook.remove()
    return inputs, norm_outputs, called, output


def _readers(inputs: list[tuple[str, tuple]]) -> list[tuple[tuple, tuple[str, ...]]]:
    """(input key, the modules reading it) in call order; a module called more than once is left out (one fold
    cannot suit all of its inputs)."""
    calls: dict[str, int] = {}
    for name, _ in inputs:
        calls[name] = calls.get(name, 0) + 1
    groups: dict[tuple, list[str]] = {}
    for name, key in inputs:
        if calls[name] == 1:
            groups.setdefault(key, []).append(name)
    return [(key, tuple(names)) for key, names in groups.items()]


def _scored(names: tuple[str, ...], called: set[str], after_norm: bool) -> str:
    """The deepest module holding every linear of the group that the block calls as a module. A lone linear
    after a norm (Phi-3's fused qkv_proj, GPT-NeoX's dense_h_to_4h) is scored on its parent (the attention, the
    MLP), as AutoAWQ does, unless that parent is the block itself."""
    parts = [name.split(".") for name in names]
    common = []
    for pieces in zip(*parts):
        if len(set(pieces)) > 1:
            break
        common.append(pieces[0])
    if after_norm and len(names) == 1 and len(common) > 1:
        common.pop()
    while common and ".".join(common) not in called:
        common.pop()
    return ".".join(common)


def changed(before: torch.Tensor, after: torch.Tensor, hidden: torch.Tensor) -> float:
    """How far a fold moved the block's output, relative to what the block adds to its input (the residual
    stream would hide a changed branch otherwise)."""
    reference = before - hidden if before.shape == hidden.shape else before
    return float((after - before).float().norm() / reference.float().norm().clamp(min=1e-12))


@torch.no_grad()
def _keeps_function(block: nn.Module, previous: nn.Module, rows: tuple[int, int] | None, readers: list[nn.Module],
                    hidden: torch.Tensor, kwargs: dict, before: torch.Tensor) -> bool:
    """Whether folding random scales into `previous` (and the readers' columns) leaves the block's output as it
    was; the weights are restored either way."""
    saved = [(tensor, tensor.detach().clone()) for module in (previous, *readers)
             for tensor in module.parameters(recurse=False)]
    # Scales spanning 1e-2 to 1e2: a small random model's activations sit near 0, where SiLU and GELU are nearly
    # linear and scales near 1 would pass through them almost unchanged.
    exponents = torch.rand(readers[0].weight.shape[1], generator=torch.Generator().manual_seed(0)) * 4 - 2
    try:
        fold_scales(previous, readers, 10 ** exponents, rows)
        after = run_block(block, [hidden], [kwargs])[0]
        return changed(before, after, hidden) <= FOLD_TOLERANCE
    except (ValueError, RuntimeError, TypeError):
        # a norm that does not scale its output by its weight, or whose forward takes more than the tensor (a gated
        # norm's gate), a shape mismatch
        return False
    finally:
        for tensor, original in saved:
            tensor.copy_(original)


def _candidates(key: tuple, width: int, norm_outputs: dict, earlier: list[str], modules: dict) -> list[tuple]:
    """Where a group's scales might fold, most likely first: the norm whose output it reads, then the linears
    called before it, the most recent first (down_proj follows up_proj; an expert's down_proj its own
    gate_up_proj), each as a whole if as wide as the group's input, else each width-wide slice of its rows, the
    last first (the up half of a fused gate_up, the v of a fused qkv). At most MAX_FOLD_TRIALS: each costs a run
    of the block, and a group no recent layer can take (a layer after GELU in a mixture of many experts) would
    otherwise try every expert's."""
    found: list[tuple[str, tuple[int, int] | None]] = [(norm_outputs[key], None)] if key in norm_outputs else []
    for name in reversed(earlier):
        rows = modules[name].out_features if isinstance(modules[name], nn.Linear) else 0
        if rows == width:
            found.append((name, None))
        elif rows > width and rows % width == 0:
            found += [(name, (start, start + width)) for start in reversed(range(0, rows, width))]
    return found[:MAX_FOLD_TRIALS]


@torch.no_grad()
def scaling_groups(block: nn.Module, hidden: torch.Tensor, kwargs: dict,
                   kept_float: frozenset[str] = frozenset()) -> BlockGroups:
    """The block's scaling groups, found on one calibration window (`hidden`, `kwargs`: the block's inputs).
    `kept_float` linears are not quantized: they take a group's scales as passengers."""
    modules = dict(block.named_modules())
    inputs, norm_outputs, called, before = _trace(block, hidden, kwargs)
    order = list(dict.fromkeys(name for name, _ in inputs))  # each reader's first call, in call order
    scaled, unscaled = [], []
    for key, names in _readers(inputs):
        quantized = tuple(name for name in names if isinstance(modules[name], nn.Linear) and name not in kept_float)
        passengers = tuple(name for name in names if name not in quantized)
        if not quantized:
            continue
        readers = [modules[name] for name in (*quantized, *passengers)]
        width = modules[quantized[0]].in_features
        if any(reader.weight.shape[1] != width for reader in readers):
            unscaled.append(quantized)
            continue
        earlier = order[:min(order.index(name) for name in names)]
        fold = next(((previous, rows) for previous, rows in _candidates(key, width, norm_outputs, earlier, modules)
                     if _keeps_function(block, modules[previous], rows, readers, hidden, kwargs, before)), None)
        if fold is None:
            unscaled.append(quantized)
        else:
            previous, rows = fold
            after_norm = previous in norm_outputs.values()
            scaled.append(ScalingGroup(previous, quantized, _scored(quantized, called, after_norm), rows, passengers))
    return BlockGroups(scaled, unscaled, before)
