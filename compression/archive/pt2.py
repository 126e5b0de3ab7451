"""A `.pt2` archive read under every rule of this package, without torch: what the API inspects and the only way
the library's loader gets at an archive's contents."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from compression.archive.errors import InvalidUpload
from compression.archive.file_kinds import describe_bytes, describe_zip, peek
from compression.archive.jsontext import parse_json
from compression.archive.limits import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.payloads import CONSTANT_FILE, WEIGHT_FILE, Payload, check_payload_files, read_payload_config
from compression.archive.program_rules import check_program
from compression.archive.sample_inputs import check_sample_inputs
from compression.archive.signature import ModelSignature, read_signature
from compression.archive.zipread import BoundedZip, NotAZip

MODEL_JSON = "models/model.json"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
WEIGHTS_DIR, CONSTANTS_DIR = "data/weights/", "data/constants/"
# Small members with fixed contents, checked so a foreign archive is named as such.
_MARKERS = {"archive_format": {"pt2"}, "archive_version": {"0"}, "byteorder": {"little"}}
_OPTIONAL = {".data/version", ".data/serialization_id"}
_EXTRA = re.compile(r"extra/[A-Za-z0-9_.-]+")
_REQUIRED = {MODEL_JSON, WEIGHTS_CONFIG, CONSTANTS_CONFIG, SAMPLE_INPUTS, "archive_format", "archive_version"}
# Members read (and so CRC-checked) on the way; the others are counted through at the end.
_READ = _REQUIRED | set(_MARKERS)
_NOT_A_PT2 = ("not a .pt2 archive ({}); save the model with torch.export.save(program, path)")


@dataclass
class Pt2Archive:
    """What a checked archive holds. `payloads` (file bytes by entry name relative to the root, e.g.
    "data/weights/weight_0") and `sample_inputs` (the nested torch.save archive) are only kept when asked for."""

    root: str
    program: dict
    signature: ModelSignature
    weights: dict[str, Payload]
    constants: dict[str, Payload]
    payloads: dict[str, bytearray] = field(default_factory=dict, repr=False)
    sample_inputs: bytes | None = field(default=None, repr=False)


def read_pt2(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS,
             keep_payloads: bool = False) -> Pt2Archive:
    """Check `source` against every rule and return its contents; InvalidUpload names the offending entry."""
    try:
        archive = BoundedZip(source, limits, "the .pt2 archive")
    except NotAZip as exc:
        raise InvalidUpload(describe_bytes(peek(source)) or _NOT_A_PT2.format(exc)) from None
    with archive:
        root, names = _layout(archive)

        def label(name: str) -> str:  # entries are named in messages as they appear in the zip
            return f"{root}/{name}"

        for name, allowed in _MARKERS.items():
            if name in names and archive.read(label(name), 64).decode(errors="replace").strip() not in allowed:
                raise InvalidUpload(f"{label(name)}: unexpected contents; not an archive torch.export.save writes")
        program = parse_json(archive.read(label(MODEL_JSON), limits.max_metadata_bytes), label(MODEL_JSON), limits)
        check_program(program, label(MODEL_JSON), limits)
        signature = read_signature(program, label(MODEL_JSON))
        weights = read_payload_config(_json(archive, label(WEIGHTS_CONFIG), limits), label(WEIGHTS_CONFIG),
                                      WEIGHT_FILE)
        constants = read_payload_config(_json(archive, label(CONSTANTS_CONFIG), limits), label(CONSTANTS_CONFIG),
                                        CONSTANT_FILE)
        _check_state_names(program, weights, constants, label(MODEL_JSON))
        payloads, sizes = {}, {WEIGHTS_DIR: {}, CONSTANTS_DIR: {}}
        for name in names:
            directory = next((d for d in sizes if name.startswith(d) and name not in _READ), None)
            if directory is None:
                continue
            if keep_payloads:
                payloads[name] = archive.read(label(name), limits.max_member_bytes)
                sizes[directory][name] = len(payloads[name])
            else:
                sizes[directory][name] = archive.count(label(name))
        for directory, config, entries in ((WEIGHTS_DIR, WEIGHTS_CONFIG, weights),
                                           (CONSTANTS_DIR, CONSTANTS_CONFIG, constants)):
            files = {name[len(directory):]: size for name, size in sizes[directory].items()}
            check_payload_files(list(entries.values()), files, label(config))
        sample_inputs = _sample_inputs(archive, label(SAMPLE_INPUTS), limits, keep_payloads)
        for name in names - _READ - set(sizes[WEIGHTS_DIR]) - set(sizes[CONSTANTS_DIR]):
            archive.count(label(name))  # the rest only needs its CRC checked
    return Pt2Archive(root, program, signature, weights, constants, payloads, sample_inputs)


def _layout(archive: BoundedZip) -> tuple[str, set[str]]:
    """The archive's one top-level folder and its entries' names relative to it, every one a known kind."""
    if not any(name.partition("/")[2] == MODEL_JSON for name in archive.members):
        kind = describe_zip(list(archive.members))
        if kind:
            raise InvalidUpload(kind)
        raise InvalidUpload("the archive holds no exported program (models/model.json is missing: a truncated file "
                            "or not written by torch.export.save); "
                            "save the model with torch.export.save(program, path) and upload it again")
    roots = {name.partition("/")[0] for name in archive.members}
    if len(roots) != 1 or any("/" not in name for name in archive.members):
        raise InvalidUpload("the .pt2 archive must keep every entry in one top-level folder, as torch.export.save "
                            f"does (found {sorted(roots)[:5]})")
    root = roots.pop()
    names = {name.partition("/")[2] for name in archive.members}
    for name in sorted(names):
        problem = _unknown_entry(name)
        if problem:
            raise InvalidUpload(f"{root}/{name}: {problem}")
    missing = sorted(_REQUIRED - names)
    if missing:
        raise InvalidUpload(f"{root}/{missing[0]} is missing; the archive was not written by torch.export.save")
    return root, names


def _unknown_entry(name: str) -> str | None:
    if name in _REQUIRED or name in _MARKERS or name in _OPTIONAL or _EXTRA.fullmatch(name):
        return None
    if name.startswith(WEIGHTS_DIR) and WEIGHT_FILE.fullmatch(name[len(WEIGHTS_DIR):]):
        return None
    if name.startswith(CONSTANTS_DIR) and CONSTANT_FILE.fullmatch(name[len(CONSTANTS_DIR):]):
        return None
    if name.startswith("data/aotinductor/"):
        return "AOTInductor entries are compiled native code and are never loaded; upload the torch.export program"
    if name in ("data/weights/model.pt", "data/constants/model.pt"):
        return "legacy pickled weights/constants are never loaded; save the model again with torch.export.save"
    if name.startswith("models/"):
        return "a second model description; exactly one (models/model.json) is loaded"
    if name.startswith(CONSTANTS_DIR) and name[len(CONSTANTS_DIR):].startswith(("custom_obj_", "opaque_obj_")):
        return "custom and opaque objects are pickles and are never loaded"
    return "not an entry torch.export.save writes for one program"


def _json(archive: BoundedZip, name: str, limits: ArchiveLimits) -> dict:
    return parse_json(archive.read(name, limits.max_metadata_bytes), name, limits)


def _check_state_names(program: dict, weights: dict, constants: dict, where: str) -> None:
    """Each parameter, buffer and tensor constant the signature lifts has its config entry; custom objects were
    refused by the program rules already."""
    for spec in program["graph_module"]["signature"]["input_specs"]:
        kind, body = next(iter(spec.items()))
        if not isinstance(body, dict):
            raise InvalidUpload(f"{where}: input spec '{kind}' must be an object")
        if kind == "parameter":
            name, table, config = body.get("parameter_name"), weights, WEIGHTS_CONFIG
        elif kind == "buffer":
            persistent = body.get("persistent", True) is not False
            name = body.get("buffer_name")
            table, config = (weights, WEIGHTS_CONFIG) if persistent else (constants, CONSTANTS_CONFIG)
        elif kind == "tensor_constant":
            name, table, config = body.get("tensor_constant_name"), constants, CONSTANTS_CONFIG
        else:
            continue
        if name not in table:
            raise InvalidUpload(f"{where}: the signature lifts {kind} '{str(name)[:120]}', which {config} does not "
                                "list")


def _sample_inputs(archive: BoundedZip, name: str, limits: ArchiveLimits, keep: bool) -> bytes | None:
    """Check the nested torch.save archive of example inputs (empty when the program kept none)."""
    with archive.spool(name) as copy:
        copy.seek(0, 2)
        if copy.tell() == 0:
            return b"" if keep else None
        copy.seek(0)
        try:
            nested = BoundedZip(copy, limits, name)
        except NotAZip as exc:
            raise InvalidUpload(f"{name}: is not a torch.save archive ({exc})") from None
        with nested:
            check_sample_inputs(nested, name, limits.max_metadata_bytes)
        copy.seek(0)
        return copy.read() if keep else None
