"""What a program takes and returns, read from its description (`models/model.json`) without torch."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from compression.archive.errors import InvalidUpload

# torch._export.serde.schema.ScalarType values -> numpy dtype names
PT2_DTYPES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float16", 7: "float32",
              8: "float64", 12: "bool", 13: "bfloat16"}
_INT8_SCALAR_TYPES = (1, 2)


@dataclass
class TensorSpec:
    name: str
    shape: list[int | None]  # None marks a dynamic dimension
    dtype: str
    # The aten op that computes an output ("sigmoid", "linear", ...): what the submission check knows of its kind.
    producer: str | None = None

    def describe(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


@dataclass
class ModelSignature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    torch_version: str | None = None
    # Module paths that own parameters (`conv1`, `layer1.0.conv2`, `fc`): what include/exclude patterns match.
    layers: list[str] = field(default_factory=list)
    # The largest batch the program accepts when it was exported with a bounded batch (Dim("batch", max=64)).
    max_batch: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ModelSignature":
        return cls([TensorSpec(**t) for t in data["inputs"]], [TensorSpec(**t) for t in data["outputs"]],
                   data["parameter_count"], data.get("torch_version"), list(data.get("layers", [])),
                   data.get("max_batch"))


def read_signature(program: dict, where: str) -> ModelSignature:
    """The user inputs/outputs, parameter count and layers of a program that passed `check_program`."""
    graph_module = program["graph_module"]
    tensors = _object(graph_module["graph"].get("tensor_values"), f"{where}: graph.tensor_values")
    signature = _object(graph_module.get("signature"), f"{where}: graph_module.signature")
    input_specs = _specs(signature, "input_specs", where)
    output_specs = _specs(signature, "output_specs", where)
    inputs = [_tensor_spec(spec["user_input"], tensors, where) for spec in input_specs if "user_input" in spec]
    outputs = [_tensor_spec(spec["user_output"], tensors, where) for spec in output_specs if "user_output" in spec]
    if not inputs or not outputs:
        raise InvalidUpload(f"{where}: the exported program has no tensor inputs or outputs")
    producers = _producers(graph_module["graph"].get("nodes"))
    for output in outputs:
        output.producer = producers.get(output.name)
    parameter_count, layers = 0, []
    for spec in input_specs:
        kind = next(iter(spec))
        if kind not in ("parameter", "buffer"):
            continue
        meta = _tensor_meta(_object(spec[kind], f"{where}: input spec").get("arg"), tensors, where)
        # Quantized programs hold their weights as int8/uint8 buffers; other buffers are statistics and qparams.
        if kind == "parameter" or meta.get("dtype") in _INT8_SCALAR_TYPES:
            dims = [size.get("as_int") for size in meta["sizes"]]
            if not all(type(dim) is int and dim >= 0 for dim in dims):
                raise InvalidUpload(f"{where}: {kind} '{spec[kind].get('arg')}' has no concrete size")
            parameter_count += math.prod(dims)
        owner = str(spec[kind].get("parameter_name", "")).rpartition(".")[0]
        if kind == "parameter" and owner and owner not in layers:
            layers.append(owner)
    version = program.get("torch_version")
    return ModelSignature(inputs, outputs, parameter_count, version if isinstance(version, str) else None, layers,
                          _batch_bound(input_specs, tensors, program.get("range_constraints", {})))


def _producers(nodes) -> dict[str, str]:
    """Tensor name -> the short name of the aten op whose output it is ("torch.ops.aten.sigmoid.default" ->
    "sigmoid"); nodes that are not well-formed are skipped (this is a hint, `check_program` judged the graph)."""
    producers = {}
    for node in nodes if isinstance(nodes, list) else []:
        target = node.get("target") if isinstance(node, dict) else None
        if not isinstance(target, str) or not isinstance(node.get("outputs"), list):
            continue
        op = target.removeprefix("torch.ops.aten.").split(".")[0]
        for output in node["outputs"]:
            name = output.get("as_tensor", {}).get("name") if isinstance(output, dict) else None
            if isinstance(name, str):
                producers[name] = op
    return producers


# A serialised size symbol: "s77" (older torch) or "Symbol('s77', positive=True, integer=True)".
_SYMBOL = re.compile(r"Symbol\('(\w+)'.*\)|(\w+)")
# Export writes an unbounded end as a huge int (int_oo) or null.
_UNBOUNDED = 2**62


def _batch_bound(input_specs: list[dict], tensors: dict, ranges: dict) -> int | None:
    """The smallest upper bound of the user inputs' batch symbols; None when every batch is unbounded."""
    bounds = []
    for spec in input_specs:
        arg = spec.get("user_input", {}).get("arg", {})
        sizes = tensors.get(arg.get("as_tensor", {}).get("name"), {}).get("sizes") or [{}]
        expression = sizes[0].get("as_expr", {}).get("expr_str") if isinstance(sizes[0], dict) else None
        match = _SYMBOL.fullmatch(expression) if isinstance(expression, str) else None
        bound = ranges.get(match.group(1) or match.group(2), {}) if match else {}
        upper = bound.get("max_val") if isinstance(bound, dict) else None
        if type(upper) is int and upper < _UNBOUNDED:
            bounds.append(upper)
    return min(bounds) if bounds else None


def _specs(signature: dict, key: str, where: str) -> list[dict]:
    specs = signature.get(key)
    if not isinstance(specs, list) or not all(isinstance(s, dict) and len(s) == 1 for s in specs):
        raise InvalidUpload(f"{where}: signature.{key} must be a list of one-key objects")
    return specs


def _tensor_spec(spec: dict, tensors: dict, where: str) -> TensorSpec:
    arg = _object(spec, f"{where}: signature entry").get("arg")
    if not isinstance(arg, dict) or "as_tensor" not in arg:
        raise InvalidUpload(f"{where}: unsupported non-tensor model input or output {str(arg)[:200]}; export a model "
                            "whose inputs and outputs are plain tensors")
    meta = _tensor_meta(arg, tensors, where)
    shape = [size.get("as_int") for size in meta["sizes"]]
    return TensorSpec(arg["as_tensor"]["name"], shape, PT2_DTYPES.get(meta["dtype"], f"scalar_type_{meta['dtype']}"))


def _tensor_meta(arg, tensors: dict, where: str) -> dict:
    """The tensor_values entry an argument names, with a list of sizes; refused when the name is missing."""
    name = arg.get("name") if isinstance(arg, dict) else None
    if name is None and isinstance(arg, dict) and isinstance(arg.get("as_tensor"), dict):
        name = arg["as_tensor"].get("name")
    meta = tensors.get(name) if isinstance(name, str) else None
    if not isinstance(meta, dict):
        raise InvalidUpload(f"{where}: the signature names tensor '{str(name)[:120]}', which graph.tensor_values "
                            "does not describe")
    sizes = meta.get("sizes")
    if not isinstance(sizes, list) or not all(isinstance(size, dict) for size in sizes):
        raise InvalidUpload(f"{where}: tensor '{name}' has no list of sizes")
    return meta


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidUpload(f"{where} must be an object")
    return value
