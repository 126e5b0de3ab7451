"""Models stored in float16 or bfloat16, as most Hugging Face checkpoints are, compressed in float32.

The int8 lowering, k-means, weight-only packing and quantizer training here are written for float32: a bfloat16
model failed in them with dtype mismatches (x86 int8 convs fed a bfloat16 input, an int8 embedding's float32 rows
meeting a bfloat16 layer norm). A quantizing stage's output keeps no float weights worth storing in half precision
(int8 or codes, plus scales), so such a stage starts from a float32 copy of its model: every half-precision
weight, buffer and constant widened, every dtype the graph casts to or builds tensors in widened the same way, and
half-precision inputs cast to float32 on entry, so the model still takes what the upload takes. Widening is exact.
Stages whose output is a float model (pruning, distillation into a float student) keep the upload's precision and
its size.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import fx

HALF = (torch.float16, torch.bfloat16)


def half_precision(model: torch.nn.Module) -> torch.dtype | None:
    """The half-precision dtype the model's floating weights are stored in, or None."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype in HALF:
            return tensor.dtype
    return None


def widened(model: torch.nn.Module) -> torch.nn.Module:
    """The model a stage computes with: a float32 copy (`in_float32`) of a model holding half-precision weights,
    else `model` itself."""
    return in_float32(model) if half_precision(model) is not None else model


def in_float32(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of an exported graph (`program.module()`) that computes in float32 and takes the same inputs; other
    modules are widened with `.float()`, their inputs then being the caller's to cast."""
    with warnings.catch_warnings():  # torch's own pytree specs warn about its deprecated LeafSpec when copied
        warnings.simplefilter("ignore", FutureWarning)
        widened = copy.deepcopy(model)
    if not isinstance(widened, fx.GraphModule):
        return widened.float()
    _widen_tensors(widened)
    graph = widened.graph
    _drop_weight_casts(graph)
    for node in list(graph.nodes):
        node.args = fx.node.map_aggregate(node.args, _widen_dtype)
        node.kwargs = fx.node.map_aggregate(node.kwargs, _widen_dtype)
        value = node.meta.get("val")
        if node.op == "placeholder" and isinstance(value, torch.Tensor) and value.dtype in HALF:
            with graph.inserting_after(node):
                cast = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
            node.replace_all_uses_with(cast, delete_user_cb=lambda user: user is not cast)
    widened.recompile()
    return widened


def _drop_weight_casts(graph: fx.Graph) -> None:
    """The casts `stored_in` put after stored weights (widened now, so each would copy a float32 tensor): a
    quantizer must see the weight itself as a conv's or linear's weight."""
    for node in list(graph.nodes):
        source = node.args[0] if node.args else None
        if (node.target is torch.ops.aten._to_copy.default and isinstance(source, fx.Node)
                and source.op == "get_attr" and node.kwargs == {"dtype": torch.float32}):
            node.replace_all_uses_with(source)
            graph.erase_node(node)


def _widen_dtype(value):
    return torch.float32 if isinstance(value, torch.dtype) and value in HALF else value


def _widen_tensors(module: torch.nn.Module) -> None:
    """Parameters and buffers in place, and tensor constants (plain tensor attributes read by get_attr nodes)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dtype in HALF:
            tensor.data = tensor.data.float()
    for node in module.graph.nodes:
        if node.op != "get_attr":
            continue
        owner_name, _, attr = node.target.rpartition(".")
        owner = module.get_submodule(owner_name)
        value = getattr(owner, attr)
        if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter) and value.dtype in HALF:
            if attr in owner._buffers:
                owner._buffers[attr] = value.float()
            else:
                setattr(owner, attr, value.float())


class TakesHalfInputs(torch.nn.Module):
    """A float32 model of one input (a zoo student built for a half-precision upload) that takes what the upload
    takes: its half-precision input is cast to float32 on entry."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):  # one named input: export gives each named input its dynamic batch
        return self.model(x.float())


@dataclass(frozen=True)
class HalfStorage:
    """How a model stores its floating tensors: `dtype` (float16 or bfloat16), except `float32_names`, tensors it
    keeps in float32 on purpose (e.g. rotary frequencies that transformers keeps in float32)."""

    dtype: torch.dtype
    float32_names: frozenset[str]

    @classmethod
    def of(cls, model: torch.nn.Module) -> "HalfStorage | None":
        dtype = half_precision(model)
        if dtype is None:
            return None
        state = model.state_dict(keep_vars=True)
        return cls(dtype, frozenset(name for name, tensor in state.items() if tensor.dtype == torch.float32))


def stored_in(model: torch.nn.Module, storage: HalfStorage | None,
              example_inputs: tuple[torch.Tensor, ...]) -> torch.nn.Module:
    """`model` (float32) with its float32 weights, buffers and constants stored as `storage` says and widened back
    to float32 where the graph reads them: a float stage's output takes the bytes the upload took and computes
    what the stage measured. A plain module is exported first; `storage` None returns `model` unchanged."""
    if storage is None:
        return model
    from compression.io import export_model

    stored = model if isinstance(model, fx.GraphModule) else export_model(model, example_inputs).module()
    if stored is model:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            stored = copy.deepcopy(model)
    graph = stored.graph
    for node in list(graph.nodes):
        if node.op != "get_attr" or node.target in storage.float32_names:
            continue
        owner_name, _, attr = node.target.rpartition(".")
        owner = stored.get_submodule(owner_name)
        value = getattr(owner, attr)
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float32:
            continue
        narrow = value.detach().to(storage.dtype)
        if isinstance(value, torch.nn.Parameter):
            value.data = narrow
        elif attr in owner._buffers:
            owner._buffers[attr] = narrow
        else:
            setattr(owner, attr, narrow)
        with graph.inserting_after(node):
            cast = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
        node.replace_all_uses_with(cast, delete_user_cb=lambda user: user is not cast)
    stored.recompile()
    return stored


def stored_program(program: torch.export.ExportedProgram, storage: HalfStorage | None,
                   example_inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """`program` re-exported from `stored_in` of its module; `storage` None returns it unchanged."""
    if storage is None:
        return program
    from compression.io import export_model
    from compression.modes import eval_mode

    return export_model(eval_mode(stored_in(program.module(), storage, example_inputs)), example_inputs)
