"""The example inputs a `.pt2` carries (`data/sample_inputs/model.pt`), checked without unpickling them.

The member is a `torch.save` archive (a nested zip) whose `data.pkl` is a pickle; torch loads it with
`weights_only=True` and, when that fails, silently again with `weights_only=False`, which runs whatever the
pickle says. Its opcodes are therefore run here on a symbolic stack machine that knows only what `torch.save`
writes for tensors in tuples and dicts: the globals that rebuild tensors and name storage types (a subset of what
torch's own weights-only unpickler allows), `collections.OrderedDict`, and plain values. Any other global, opcode
or shape of result is refused, and every storage must be a member of the nested archive of exactly its byte size.
"""

from __future__ import annotations

import pickletools
import re
from dataclasses import dataclass

from compression.archive.errors import InvalidUpload
from compression.archive.symbolic import IDENTIFIER
from compression.archive.zipread import BoundedZip

_TENSOR_REBUILDERS = {"torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_tensor"}
_EMPTY_ORDERED_DICT = "collections OrderedDict"
STORAGE_ITEMSIZE = {"Float": 4, "Double": 8, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                    "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16}
_STORAGES = {f"torch {kind}Storage": size for kind, size in STORAGE_ITEMSIZE.items()}
_ALLOWED_GLOBALS = _TENSOR_REBUILDERS | {_EMPTY_ORDERED_DICT} | set(_STORAGES)
_STRINGS = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8"}
_INTEGERS = {"BININT", "BININT1", "BININT2", "LONG1", "INT", "LONG"}
_MEMO_PUT = {"BINPUT", "LONG_BINPUT", "PUT"}
_MEMO_GET = {"BINGET", "LONG_BINGET", "GET"}
_IGNORED = {"PROTO", "FRAME"}
_CONSTANTS = {"NEWTRUE": True, "NEWFALSE": False, "NONE": None, "EMPTY_TUPLE": ()}
_LAYOUT = re.compile(r"[^/]+/(data\.pkl|data/[0-9]+|byteorder|version|\.format_version|\.storage_alignment"
                     r"|\.data/serialization_id)")
MAX_NESTING = 16


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    itemsize: int
    numel: int


@dataclass(frozen=True)
class _Tensor:
    pass


_MARK = object()


def check_sample_inputs(archive: BoundedZip, where: str, max_pickle_bytes: int) -> None:
    """Refuse the nested `torch.save` archive `archive` unless it holds `(tuple, dict)` of tensors only."""
    for name in archive.members:
        if not _LAYOUT.fullmatch(name):
            raise InvalidUpload(f"{where}: entry '{name}' is not part of a torch.save archive of tensors")
    roots = {name.split("/")[0] for name in archive.members}
    pickles = [name for name in archive.members if name.endswith("/data.pkl")]
    if len(roots) != 1 or len(pickles) != 1:
        raise InvalidUpload(f"{where}: is not one torch.save archive (one folder with one data.pkl)")
    storages: dict[str, _Storage] = {}
    result = _run(archive.read(pickles[0], max_pickle_bytes), storages, where)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], tuple)
            and isinstance(result[1], dict)):
        raise InvalidUpload(f"{where}: example inputs must be (args tuple, kwargs dict)")
    _check_leaves(result, where, 0, set())
    root = roots.pop()
    for storage in storages.values():
        name = f"{root}/data/{storage.key}"
        if name not in archive.members:
            raise InvalidUpload(f"{where}: storage '{storage.key}' has no entry '{name}'")
        size = archive.count(name)
        if size != storage.numel * storage.itemsize:
            raise InvalidUpload(f"{where}: entry '{name}' holds {size} bytes; its storage needs "
                                f"{storage.numel * storage.itemsize}")


def _run(data: bytes | bytearray, storages: dict[str, _Storage], where: str):
    stack: list = []
    memo: dict[int, object] = {}
    try:
        for opcode, arg, _position in pickletools.genops(bytes(data)):
            name = opcode.name
            if name in _IGNORED:
                continue
            if name == "STOP":
                return stack.pop()
            _step(name, arg, stack, memo, storages, where)
    except InvalidUpload:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise InvalidUpload(f"{where}: data.pkl is not a pickle of tensors ({type(exc).__name__}: {exc})") from None
    raise InvalidUpload(f"{where}: data.pkl ends without STOP")


def _step(name: str, arg, stack: list, memo: dict, storages: dict, where: str) -> None:
    if name in _STRINGS or name in _INTEGERS or name in ("BINFLOAT", "FLOAT"):
        stack.append(arg)
    elif name in _CONSTANTS:
        stack.append(_CONSTANTS[name])
    elif name in ("EMPTY_LIST", "EMPTY_DICT"):
        stack.append([] if name == "EMPTY_LIST" else {})
    elif name == "MARK":
        stack.append(_MARK)
    elif name in ("TUPLE", "LIST", "DICT"):
        items = _pop_mark(stack)
        stack.append(tuple(items) if name == "TUPLE" else list(items) if name == "LIST" else _pairs(items, where))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        count = int(name[-1])
        items = stack[-count:]
        del stack[-count:]
        stack.append(tuple(items))
    elif name in ("APPEND", "APPENDS"):
        items = _pop_mark(stack) if name == "APPENDS" else [stack.pop()]
        _expect(stack[-1], list, where).extend(items)
    elif name in ("SETITEM", "SETITEMS"):
        items = _pop_mark(stack) if name == "SETITEMS" else [stack.pop(-2), stack.pop()]
        _expect(stack[-1], dict, where).update(_pairs(items, where))
    elif name in _MEMO_PUT or name == "MEMOIZE":
        memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
    elif name in _MEMO_GET:
        stack.append(memo[arg])
    elif name in ("GLOBAL", "STACK_GLOBAL"):
        qualified = arg if name == "GLOBAL" else _stack_global(stack, where)
        if qualified not in _ALLOWED_GLOBALS:
            raise InvalidUpload(f"{where}: data.pkl refers to '{qualified}', which is not a tensor rebuilder, "
                                "storage type or OrderedDict; only tensors are accepted as example inputs")
        stack.append(_Global(qualified))
    elif name == "BINPERSID":
        stack.append(_storage(stack.pop(), storages, where))
    elif name == "REDUCE":
        args, function = stack.pop(), stack.pop()
        stack.append(_call(function, args, where))
    else:
        raise InvalidUpload(f"{where}: data.pkl uses pickle opcode {name}, which a pickle of tensors never needs")


def _stack_global(stack: list, where: str) -> str:
    name, module = stack.pop(), stack.pop()
    if not isinstance(module, str) or not isinstance(name, str):
        raise InvalidUpload(f"{where}: data.pkl names a global by something other than strings")
    return f"{module} {name}"


def _storage(pid, storages: dict[str, _Storage], where: str) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Global)
            and pid[1].name in _STORAGES and isinstance(pid[2], str) and pid[2].isdigit()
            and isinstance(pid[3], str) and type(pid[4]) is int and pid[4] >= 0):
        raise InvalidUpload(f"{where}: data.pkl has a persistent reference that is not a tensor storage")
    storage = _Storage(pid[2], _STORAGES[pid[1].name], pid[4])
    if storages.setdefault(storage.key, storage) != storage:
        raise InvalidUpload(f"{where}: storage '{storage.key}' is declared twice with different sizes")
    return storage


def _call(function, args, where: str):
    if not isinstance(function, _Global) or not isinstance(args, tuple):
        raise InvalidUpload(f"{where}: data.pkl calls something other than an allowed global")
    if function.name == _EMPTY_ORDERED_DICT:
        if args:
            raise InvalidUpload(f"{where}: data.pkl builds an OrderedDict with contents")
        return {}
    if function.name in _TENSOR_REBUILDERS and len(args) >= 4 and isinstance(args[0], _Storage):
        return _Tensor()
    raise InvalidUpload(f"{where}: data.pkl calls {function.name} with arguments that do not rebuild a tensor")


def _check_leaves(value, where: str, depth: int, seen: set[int]) -> None:
    """Example inputs are nested tuples/lists/dicts (identifier keys) of tensors and plain numbers. Memo
    references can make one container appear many times: each is checked once (`seen`)."""
    if depth > MAX_NESTING:
        raise InvalidUpload(f"{where}: example inputs nest deeper than {MAX_NESTING} levels")
    if isinstance(value, (tuple, list, dict)):
        if id(value) in seen:
            return
        seen.add(id(value))
    if isinstance(value, (tuple, list)):
        for item in value:
            _check_leaves(item, where, depth + 1, seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not IDENTIFIER.fullmatch(key):
                raise InvalidUpload(f"{where}: example input name {str(key)[:80]!r} is not a Python identifier")
            _check_leaves(item, where, depth + 1, seen)
    elif not isinstance(value, (_Tensor, bool, int, float)) and value is not None:
        raise InvalidUpload(f"{where}: example inputs hold a {type(value).__name__}; only tensors and numbers are "
                            "accepted")


def _pop_mark(stack: list) -> list:
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1:]
            del stack[index:]
            return items
    raise ValueError("MARK missing")


def _pairs(items: list, where: str) -> dict:
    if len(items) % 2:
        raise InvalidUpload(f"{where}: data.pkl sets a dict item without a value")
    keys = items[0::2]
    if not all(isinstance(key, (str, int)) for key in keys):
        raise InvalidUpload(f"{where}: data.pkl uses a dict key that is not a string")
    return dict(zip(keys, items[1::2]))


def _expect(value, kind: type, where: str):
    if not isinstance(value, kind):
        raise InvalidUpload(f"{where}: data.pkl adds items to a {type(value).__name__}")
    return value
