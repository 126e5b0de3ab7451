"""What an upload in the wrong format is, so the refusal can say how to make the right one instead.

Users reach for the file they already have: for a model a TorchScript archive (`torch.jit.save`), a `torch.save`
checkpoint, a safetensors weights file, an ONNX model, an AOTInductor package (also named `.pt2`); for a dataset a
JSON array, a CSV table, a Parquet or `.npy` file. Each is recognised from its first bytes or its zip entry names
(never parsed further, never unpickled) and named in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

EXPORT_HOW = ("export the nn.Module with torch.export.export(model, example_inputs, dynamic_shapes=...) and save "
              "it with torch.export.save(program, 'model.pt2')")


def describe_zip(names: list[str]) -> str | None:
    """The kind of a zip that holds no exported program, from its entry names (below the one top folder)."""
    inner = {name.partition("/")[2] for name in names}
    if any(name.startswith("data/aotinductor/") for name in inner):
        return ("this .pt2 is an AOTInductor package (aoti_compile_and_package: compiled code for one machine), not "
                "an exported program; upload the program itself: torch.export.save(torch.export.export(model, "
                "example), path)")
    if any(name.startswith("code/") for name in inner) and "data.pkl" in inner:
        return ("this is a TorchScript archive (torch.jit.save / torch.jit.trace), which modelpress does not read; "
                f"{EXPORT_HOW} (from the original Python model: a scripted module does not export)")
    if "data.pkl" in inner:
        return (f"this is a torch.save checkpoint (a pickle, which is never loaded); {EXPORT_HOW}, or upload a "
                "Hugging Face folder (.zip of save_pretrained's output)")
    return None


def describe_bytes(head: bytes) -> str | None:
    """The kind of a file that is not a zip, from its first bytes."""
    lower = head.lower()
    if len(head) >= 10 and head[8:10] == b'{"':  # a little-endian header length, then the JSON header
        return ("this is a safetensors weights file: weights without the model's code; upload the Hugging Face "
                f"folder it belongs to (.zip of config.json, *.safetensors and tokenizer files), or {EXPORT_HOW}")
    if head[:1] == b"\x80":  # the PROTO opcode every pickle since protocol 2 starts with
        return f"this is a pickle (a legacy torch.save file), which is never loaded; {EXPORT_HOW}"
    if head[:4] == b"GGUF":
        return f"this is a GGUF file (llama.cpp), which modelpress does not read; {EXPORT_HOW}"
    if head[:1] == b"\x08" and (b"pytorch" in lower or b"onnx" in lower):  # ir_version, then the producer
        return f"this looks like an ONNX model, which modelpress does not read; {EXPORT_HOW}"
    if head.startswith((b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07")):
        kind = "7z" if head.startswith(b"7z") else "RAR"
        return (f"this is a {kind} archive, which is not read; pack the model folder as a .zip or a .tar "
                "(gzip or xz compression is fine: tar czf model.tar.gz -C my-model .)")
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return f"this is an HDF5 file (Keras/TensorFlow weights), which modelpress does not read; {EXPORT_HOW}"
    return None


def describe_dataset_bytes(head: bytes) -> str | None:
    """What a dataset upload that is neither a zip (.npz) nor JSON lines looks like, from its first bytes."""
    if head.startswith(b"PK") or not head:
        return None
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "this is one JSON array, not JSON lines"
    if head.startswith(b"PAR1"):
        return "this is a Parquet file"
    if head.startswith(b"\x93NUMPY"):
        return "this is a single .npy array, without split and input names"
    first_line = text.split(b"\n", 1)[0]
    if b"," in first_line or b"\t" in first_line:
        return "this looks like a CSV/TSV table"
    return None


def peek(source: str | Path | BinaryIO, size: int = 512) -> bytes:
    """The first `size` bytes of `source` (a path or a seekable file, whose position is kept)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            return file.read(size)
    position = source.tell()
    source.seek(0)
    try:
        return source.read(size)
    finally:
        source.seek(position)
