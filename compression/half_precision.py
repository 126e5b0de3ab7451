"""Models stored in float16 or bfloat16, as most Hugging Face checkpoints are, or in float64 (a scientific model
exported in double), compressed in float32.

The int8 lowering, k-means, weight-only packing and quantizer training here are written for float32: a bfloat16
model failed in them with dtype mismatches (x86 int8 convs fed a bfloat16 input, an int8 embedding's float32 rows
meeting a bfloat16 layer norm), and float16 training overflowed. So every stage starts from a float32 copy of its
model (`widened`): every half-precision weight, buffer and constant widened, every dtype the graph casts to or
builds tensors in widened the same way, and half-precision inputs cast to float32 on entry, so the model still
takes what the upload takes. Widening is exact. A quantizing stage's output keeps no float weights worth storing
in half precision (int8 or codes, plus float32 scales). A stage whose output is a float model (pruning,
distillation into a float student) stores it in the upload's precision and computes it so (`stored_in`): the
upload's size and speed.

A float64 model is narrowed the same way (int8 PTQ failed on its double inputs, iPQ on a double matmul), within
float32 rounding, which the stage's metrics measure against the upload; below, "half precision" stands for float64
too.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
from torch import fx

# The precisions a stage computes in float32 rather than in
NOT_FLOAT32 = (torch.float16, torch.bfloat16, torch.float64)


def half_precision(model: torch.nn.Module) -> torch.dtype | None:
    """The half-precision dtype the model's floating weights are stored in, or None."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.dtype in NOT_FLOAT32:
            return tensor.dtype
    return None


def widened(model: torch.nn.Module) -> torch.nn.Module:
    """The model a stage computes with: a float32 copy (`in_float32`) of a model holding half-precision weights,
    else `model` itself."""
    return in_float32(model) if half_precision(model) is not None else model


def in_float32(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of an exported graph (`program.module()`) that computes in float32 and takes the same inputs; other
    modules are widened with `.float()`, their inputs then being the caller's to cast."""
    widened = _copy(model)
    if not isinstance(widened, fx.GraphModule):
        return widened.float()
    _widen_tensors(widened)
    graph = widened.graph
    _drop_weight_casts(graph)
    for node in list(graph.nodes):
        node.args = fx.node.map_aggregate(node.args, _widen_dtype)
        node.kwargs = fx.node.map_aggregate(node.kwargs, _widen_dtype)
        value = node.meta.get("val")
        if node.op == "placeholder" and isinstance(value, torch.Tensor) and value.dtype in NOT_FLOAT32:
            with graph.inserting_after(node):
                cast = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
            cast.meta["val"] = value.float()
            node.replace_all_uses_with(cast, delete_user_cb=lambda user: user is not cast)
        elif "val" in node.meta:
            # What the node computes now: the quantizer reads these dtypes (a weight's dequantize would give
            # bfloat16), and a graph whose traced values are whole is not exported again (`exported_copy`).
            node.meta["val"] = fx.node.map_aggregate(value, _widen_traced)
    widened.recompile()
    return widened


def _drop_weight_casts(graph: fx.Graph) -> None:
    """The casts `stored_in`'s fallback put after stored weights (widened now, so each would copy a float32
    tensor): a quantizer must see the weight itself as a conv's or linear's weight."""
    _drop_float32_casts_after(graph, lambda source: source.op == "get_attr")


def _drop_float32_casts_after(graph: fx.Graph, is_source) -> None:
    """Remove each `_to_copy(dtype=float32)` of a node `is_source` accepts; its users read the node itself."""
    for node in list(graph.nodes):
        source = node.args[0] if node.args else None
        if (node.target is torch.ops.aten._to_copy.default and isinstance(source, fx.Node) and is_source(source)
                and node.kwargs == {"dtype": torch.float32}):
            node.replace_all_uses_with(source)
            graph.erase_node(node)


def _widen_dtype(value):
    return torch.float32 if isinstance(value, torch.dtype) and value in NOT_FLOAT32 else value


def _widen_traced(value):
    return value.float() if isinstance(value, torch.Tensor) and value.dtype in NOT_FLOAT32 else value


def _widen_tensors(module: torch.nn.Module) -> None:
    """Parameters and buffers in place, and tensor constants (plain tensor attributes read by get_attr nodes)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dtype in NOT_FLOAT32:
            tensor.data = tensor.data.float()
    for node in module.graph.nodes:
        value = _read_tensor(module, node)
        if value is not None and value.dtype in NOT_FLOAT32:
            _replace_tensor(module, node, value.float())


def _read_tensor(module: fx.GraphModule, node: fx.Node) -> torch.Tensor | None:
    """The tensor a get_attr node reads, else None."""
    if node.op != "get_attr":
        return None
    owner_name, _, attr = node.target.rpartition(".")
    value = getattr(module.get_submodule(owner_name), attr)
    return value if isinstance(value, torch.Tensor) else None


def _replace_tensor(module: fx.GraphModule, node: fx.Node, tensor: torch.Tensor) -> None:
    """Put `tensor` where the get_attr node reads: a parameter's data, a buffer or a plain tensor attribute."""
    owner_name, _, attr = node.target.rpartition(".")
    owner = module.get_submodule(owner_name)
    current = getattr(owner, attr)
    if isinstance(current, torch.nn.Parameter):
        current.data = tensor
    elif attr in owner._buffers:
        owner._buffers[attr] = tensor
    else:
        setattr(owner, attr, tensor)


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
    """`model` (float32) stored as `storage` says and computing as the upload did: its float32 weights, buffers and
    constants narrowed to the half-precision dtype, and a cast put before each op that then meets two precisions
    (a linear whose input a float32 norm produced), so matmuls and convolutions run in half precision at the
    upload's speed. Narrowing is exact for weights the stage left alone (they came from the upload). Where that
    graph cannot be made to run, or computes more than `HALF_COMPUTE_GAP` away from `model`, the weights are
    stored narrowed and widened where the graph reads them (float32 compute, at a cast per weight per call).
    A plain module is exported first; `storage` None returns `model` unchanged."""
    if storage is None:
        return model
    from compression.io import export_model

    graph_module = model if isinstance(model, fx.GraphModule) else export_model(model, example_inputs).module()
    try:
        computing = _computing_in(graph_module, storage, example_inputs)
    except Exception:  # noqa: BLE001 - an op the repair cannot make run: the float32-compute form is always valid
        computing = None
    if computing is not None and _gap(computing, graph_module, example_inputs) <= HALF_COMPUTE_GAP:
        return computing
    return _widened_where_read(graph_module, storage)


# How far (largest difference over the output's largest magnitude) a half-precision graph may compute from the
# float32 stage model it stores: bfloat16 keeps 8 bits of mantissa, so a layer adds ~0.4 % and a deep network a
# few percent; a larger gap means the repair changed what is computed.
HALF_COMPUTE_GAP = 0.1


def _copy(module: torch.nn.Module) -> torch.nn.Module:
    with warnings.catch_warnings():  # torch's own pytree specs warn about its deprecated LeafSpec when copied
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module)


def _narrowed_get_attrs(module: fx.GraphModule, storage: HalfStorage) -> list[fx.Node]:
    """Narrow, in place, every float32 tensor a get_attr node reads (except `storage.float32_names`); its nodes."""
    narrowed = []
    for node in module.graph.nodes:
        value = _read_tensor(module, node)
        if value is None or value.dtype != torch.float32 or node.target in storage.float32_names:
            continue
        _replace_tensor(module, node, value.detach().to(storage.dtype))
        narrowed.append(node)
    return narrowed


def _widened_where_read(graph_module: fx.GraphModule, storage: HalfStorage) -> fx.GraphModule:
    stored = _copy(graph_module)
    graph = stored.graph
    for node in _narrowed_get_attrs(stored, storage):
        with graph.inserting_after(node):
            cast = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
        node.replace_all_uses_with(cast, delete_user_cb=lambda user: user is not cast)
    stored.recompile()
    return stored


def _computing_in(graph_module: fx.GraphModule, storage: HalfStorage,
                  example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    stored = _copy(graph_module)
    _narrowed_get_attrs(stored, storage)
    _drop_input_casts(stored.graph)
    for node in list(stored.graph.nodes):  # dtype checks of the float32 trace; the next export writes new ones
        if node.target is torch.ops.aten._assert_tensor_metadata.default:
            stored.graph.erase_node(node)
    stored.recompile()
    with torch.no_grad():
        _PrecisionRepair(stored, storage.dtype).run(*example_inputs)
    stored.graph.lint()
    stored.recompile()
    return stored


def _drop_input_casts(graph: fx.Graph) -> None:
    """The casts `in_float32` put after half-precision inputs: the graph takes them as they come again."""
    def half_input(source: fx.Node) -> bool:
        value = source.meta.get("val")
        return source.op == "placeholder" and isinstance(value, torch.Tensor) and value.dtype in NOT_FLOAT32

    _drop_float32_casts_after(graph, half_input)


class _PrecisionRepair(fx.Interpreter):
    """Runs the graph on example inputs; an op that fails on a mix of float32 and half-precision tensors (a
    linear's float32 input and half weight) gets its float32 arguments cast to the half dtype, in the graph too.
    Elementwise ops promote mixed inputs to float32 by themselves and are left so."""

    def __init__(self, module: fx.GraphModule, dtype: torch.dtype):
        super().__init__(module, garbage_collect_values=False)
        self.dtype = dtype

    def run_node(self, node: fx.Node):
        try:
            return super().run_node(node)
        except RuntimeError:
            if node.op != "call_function" or not self._mixes_precisions(node):
                raise
        node.args = fx.node.map_aggregate(node.args, lambda arg: self._narrowed(arg, node))
        node.kwargs = fx.node.map_aggregate(node.kwargs, lambda arg: self._narrowed(arg, node))
        return super().run_node(node)

    def _tensor(self, arg) -> torch.Tensor | None:
        value = self.env.get(arg) if isinstance(arg, fx.Node) else None
        return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None

    def _mixes_precisions(self, node: fx.Node) -> bool:
        dtypes = set()
        fx.node.map_aggregate((node.args, node.kwargs), lambda arg: dtypes.add(getattr(self._tensor(arg), "dtype",
                                                                                        None)))
        return torch.float32 in dtypes and self.dtype in dtypes

    def _narrowed(self, arg, node: fx.Node):
        value = self._tensor(arg)
        if value is None or value.dtype != torch.float32:
            return arg
        with self.graph.inserting_before(node):
            cast = self.graph.call_function(torch.ops.aten._to_copy.default, (arg,), {"dtype": self.dtype})
        self.env[cast] = value.to(self.dtype)
        return cast


def _gap(stored: fx.GraphModule, reference: fx.GraphModule, example_inputs: tuple[torch.Tensor, ...]) -> float:
    """The largest `relative_max_gap` over the float outputs."""
    from compression.fidelity import relative_max_gap

    with torch.no_grad():
        got, want = (torch.utils._pytree.tree_leaves(graph(*example_inputs)) for graph in (stored, reference))
    pairs = [(g, w) for g, w in zip(got, want) if isinstance(w, torch.Tensor) and w.is_floating_point()]
    if len(got) != len(want) or any(g.shape != w.shape for g, w in pairs):
        return float("inf")
    return max((relative_max_gap(g.float(), w.float()) for g, w in pairs), default=0.0)


def stored_program(program: torch.export.ExportedProgram, storage: HalfStorage | None,
                   example_inputs: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """`program` re-exported from `stored_in` of its module; `storage` None returns it unchanged."""
    if storage is None:
        return program
    from compression.io import export_model
    from compression.modes import eval_mode

    return export_model(eval_mode(stored_in(program.module(), storage, example_inputs)), example_inputs)


def float_result(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], storage: HalfStorage | None,
                 metrics: dict) -> torch.export.ExportedProgram:
    """A float stage's output program: exported in eval mode with its tall 1-D convs turned on their side (exact,
    `compression.ptq.conv_orientation`, counted in `metrics`) and stored in the upload's precision (`stored_in`)."""
    from compression.modes import eval_mode
    from compression.ptq.conv_orientation import export_on_their_side

    return stored_program(export_on_their_side(eval_mode(model), example_inputs, metrics), storage, example_inputs)
