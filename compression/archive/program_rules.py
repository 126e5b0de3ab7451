"""Rules for the program description (`models/model.json`): everything in it that torch would resolve, evaluate or
compile into Python must be on an allowlist.

What torch does with the parts checked here (torch 2.13, `torch/_export/serde/serialize.py`, `export/_unlift.py`):
- node targets and `as_operator` arguments are resolved by walking attributes from the `torch`, `operator` or
  `math` module (so `torch.os.system` would be `os.system`), `#ns:op` through extension handlers;
- every `expr_str` goes through `sympy.sympify` (an `eval`), `guards_code` through `exec`;
- node, argument and keyword names become identifiers in generated Python source, and parameter/buffer names
  become `getattr(self, "<name>")` in it, without escaping;
- a string placeholder's value is pasted into a guard between quotes;
- a pytree context may carry `{"__enum__": ...}`, which imports a module named by the file;
- custom objects are unpickled.
"""

from __future__ import annotations

import re

from compression.archive.errors import InvalidUpload
from compression.archive.jsontext import parse_json
from compression.archive.limits import ArchiveLimits
from compression.archive.symbolic import IDENTIFIER, SYMBOL_NAME, check_guard, check_sym_expr

OPERATOR_NAMESPACES = {"aten", "prims", "quantized_decomposed", "torchao"}
# aten ops that read or write files by name.
FILE_OPERATORS = {"from_file", "save"}
# aten's operator-overloading ops are the only dunder names an operator may have.
DUNDER_OPERATORS = {"__and__", "__or__", "__xor__", "__lshift__", "__rshift__", "__iand__", "__ior__", "__ixor__",
                    "__ilshift__", "__irshift__"}
# Higher-order operators that only run their subgraphs (checked like the main graph) or a listed operator; those
# that call Python callables, native code, kernels or custom objects are left out.
HIGHER_ORDER_OPERATORS = {"cond", "while_loop", "while_loop_stack_output", "map_impl", "scan", "associative_scan",
                          "invoke_subgraph", "wrap_with_set_grad_enabled", "wrap_with_autocast", "auto_functionalized",
                          "auto_functionalized_v2", "flex_attention", "out_dtype"}
# Symbolic-integer arithmetic torch writes as Python functions (its serializer's _SYM_OPS).
PYTHON_OPERATORS = {f"_operator.{name}" for name in (
    "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub", "floordiv", "mod", "pow", "truediv",
    "and_", "or_", "lshift", "rshift")} | {"math.trunc"} | {f"torch.sym_{name}" for name in (
        "not", "int", "float", "ite", "max", "min", "sqrt")}
VERIFIERS = {"", "ATEN", "TRAINING"}
# The kinds of graph input torch turns into placeholders whose value never reaches generated code as text.
GRAPH_INPUT_KINDS = {"as_tensor", "as_sym_int", "as_sym_float", "as_sym_bool", "as_int", "as_float", "as_bool",
                     "as_none"}

FQN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_OPERATOR = re.compile(r"torch\.ops\.(?P<namespace>[A-Za-z_][A-Za-z0-9_]*)\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                       r"(\.(?P<overload>[A-Za-z_][A-Za-z0-9_]*))?")
_NAME_KEYS = {"name", "as_name"}
_FQN_KEYS = {"parameter_name", "buffer_name", "tensor_constant_name", "fqn"}
_VALUE_TABLES = {"tensor_values", "sym_int_values", "sym_float_values", "sym_bool_values"}
_CUSTOM_OBJECT_KEYS = {"as_custom_obj", "custom_obj", "custom_obj_name"}


def check_operator(target, where: str) -> None:
    """Refuse a call target outside the allowlist: `torch.ops.<aten|prims|quantized_decomposed|torchao>.<op>.<overload>`
    (no file-touching op), `torch.ops.higher_order.<listed op>`, or a listed Python/`torch.sym_*` function."""
    if not isinstance(target, str):
        raise InvalidUpload(f"{where}: call target must be a string, got {type(target).__name__}")
    if target in PYTHON_OPERATORS:
        return
    match = _OPERATOR.fullmatch(target)
    if match is None:
        raise InvalidUpload(f"{where}: calls '{_short(target)}', which is not an allowed operator (torch.ops.aten/"
                            "prims/quantized_decomposed/torchao operators, listed higher-order operators and symbolic "
                            "integer arithmetic only)")
    namespace, name, overload = match.group("namespace", "name", "overload")
    if namespace == "higher_order":
        if name not in HIGHER_ORDER_OPERATORS or overload is not None:
            raise InvalidUpload(f"{where}: calls higher-order operator '{_short(target)}', which is not allowed")
        return
    if namespace not in OPERATOR_NAMESPACES or overload is None:
        raise InvalidUpload(f"{where}: calls '{_short(target)}', which is not an operator of an allowed namespace "
                            f"({', '.join(sorted(OPERATOR_NAMESPACES))})")
    if name.startswith("__") and name not in DUNDER_OPERATORS or overload.startswith("__"):
        raise InvalidUpload(f"{where}: calls '{_short(target)}', which is not an operator")
    if namespace == "aten" and name in FILE_OPERATORS:
        raise InvalidUpload(f"{where}: calls '{target}', which reads or writes files; it is never run")


def check_program(program: dict, where: str, limits: ArchiveLimits) -> None:
    """Apply every rule to the parsed `models/model.json`; messages start with `where` (the entry's name)."""
    graph_module = program.get("graph_module")
    if not isinstance(graph_module, dict) or not isinstance(graph_module.get("graph"), dict):
        raise InvalidUpload(f"{where}: has no graph_module.graph object; not a program written by torch.export.save")
    for verifier in _list(program.get("verifiers", []), f"{where}: verifiers"):
        if verifier not in VERIFIERS:
            raise InvalidUpload(f"{where}: names verifier '{_short(str(verifier))}'; known: ATEN, TRAINING")
    for index, guard in enumerate(_list(program.get("guards_code", []), f"{where}: guards_code")):
        check_guard(guard, f"{where}: guards_code[{index}]")
    ranges = program.get("range_constraints", {})
    if not isinstance(ranges, dict):
        raise InvalidUpload(f"{where}: range_constraints must be an object")
    for symbol, bounds in ranges.items():
        if not SYMBOL_NAME.fullmatch(symbol) or not isinstance(bounds, dict) or not all(
                value is None or type(value) is int for value in bounds.values()):
            raise InvalidUpload(f"{where}: range constraint '{_short(symbol)}' is not a symbol with integer bounds")
    metadata = graph_module.get("metadata", {})
    if isinstance(metadata, dict) and isinstance(metadata.get("custom"), str):
        parse_json(metadata["custom"], f"{where}: graph_module.metadata.custom", limits, object)
    for entry in _list(graph_module.get("module_call_graph", []), f"{where}: module_call_graph"):
        _check_call_signature(entry.get("signature") if isinstance(entry, dict) else None, where, limits)
    _walk(program, where, limits)


def called_operators(program: dict) -> set[str]:
    """Every call target and operator argument of a checked program (nested graphs included)."""
    found, stack = set(), [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if {"target", "inputs", "outputs"} <= item.keys():
                found.add(item["target"])
            if isinstance(item.get("as_operator"), str):
                found.add(item["as_operator"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _walk(program: dict, where: str, limits: ArchiveLimits) -> None:
    """Visit every object of the program, wherever it sits (nested graphs of higher-order ops included)."""
    stack: list = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key in _CUSTOM_OBJECT_KEYS or key == "custom_obj_values" and value:
                raise InvalidUpload(f"{where}: uses a custom object ('{key}'); custom objects are pickles and are "
                                    "never loaded: export a model whose state is plain tensors")
            if key == "expr_str":
                check_sym_expr(value, f"{where}: symbolic expression")
            elif key == "as_operator":
                check_operator(value, f"{where}: operator argument")
            elif key in _NAME_KEYS and isinstance(value, str) and value and not IDENTIFIER.fullmatch(value):
                raise InvalidUpload(f"{where}: name '{_short(value)}' is not a Python identifier")
            elif key in _FQN_KEYS and isinstance(value, str) and (value or key != "fqn") and not FQN.fullmatch(value):
                raise InvalidUpload(f"{where}: {key} '{_short(value)}' is not a dotted module path")
            elif key in _VALUE_TABLES and isinstance(value, dict):
                bad = next((name for name in value if not IDENTIFIER.fullmatch(name)), None)
                if bad is not None:
                    raise InvalidUpload(f"{where}: value name '{_short(bad)}' is not a Python identifier")
        if {"target", "inputs", "outputs"} <= item.keys():
            _check_node(item, where, limits)
        if {"nodes", "inputs", "outputs"} <= item.keys():
            for graph_input in _list(item["inputs"], f"{where}: graph inputs"):
                kind = next(iter(graph_input), None) if isinstance(graph_input, dict) else None
                if kind not in GRAPH_INPUT_KINDS:
                    raise InvalidUpload(f"{where}: a graph input is {kind or 'malformed'}; inputs must be tensors or "
                                        "numbers")
        stack.extend(item.values())


def _check_node(node: dict, where: str, limits: ArchiveLimits) -> None:
    check_operator(node["target"], f"{where}: node")
    metadata = node.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidUpload(f"{where}: node metadata must be an object")
    for key in ("custom", "from_node"):
        if isinstance(metadata.get(key), str):
            parse_json(metadata[key], f"{where}: node metadata '{key}'", limits, object)
    source_fn_stack = metadata.get("source_fn_stack")
    if isinstance(source_fn_stack, str):
        for item in source_fn_stack.split(";"):
            _, _, target = item.partition(",")
            _check_source_function(target, f"{where}: source_fn_stack")


def _check_source_function(target: str, where: str) -> None:
    # Resolved like a call target but only kept as metadata: a torch module/function path, a listed operator, or a
    # name torch keeps as a plain string.
    if target.startswith("torch.ops."):
        check_operator(target, where)
        return
    if not _DOTTED.fullmatch(target) or any(part.startswith("__") for part in target.split(".")):
        raise InvalidUpload(f"{where}: '{_short(target)}' is not a module or function path")


def _check_call_signature(signature, where: str, limits: ArchiveLimits) -> None:
    if signature is None:
        return
    if not isinstance(signature, dict):
        raise InvalidUpload(f"{where}: module_call_graph signature must be an object")
    for name in _list(signature.get("forward_arg_names") or [], f"{where}: forward_arg_names"):
        if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
            raise InvalidUpload(f"{where}: forward argument '{_short(str(name))}' is not a Python identifier")
    for key in ("in_spec", "out_spec"):
        if isinstance(signature.get(key), str):
            _check_treespec(parse_json(signature[key], f"{where}: {key}", limits, list), f"{where}: {key}", limits)


def _check_treespec(spec: list, where: str, limits: ArchiveLimits) -> None:
    """A pytree spec names container types (only dotted paths) and JSON contexts (never enum references, which
    torch resolves by importing the named module)."""
    stack = list(spec[1:])
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            raise InvalidUpload(f"{where}: a tree spec node must be an object")
        kind = node.get("type")
        if kind is not None and (not isinstance(kind, str) or not _DOTTED.fullmatch(kind)
                                 or any(part.startswith("__") for part in kind.split("."))):
            raise InvalidUpload(f"{where}: tree spec type '{_short(str(kind))}' is not a dotted type name")
        if isinstance(node.get("context"), str):
            _refuse_enums(parse_json(node["context"], where, limits, object), where)
        stack.extend(_list(node.get("children_spec", []), where))


def _refuse_enums(value, where: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__enum__" in item:
                raise InvalidUpload(f"{where}: a tree spec context holds an enum reference, which would import a "
                                    "module named by the file")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise InvalidUpload(f"{where} must be a list")
    return value


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
