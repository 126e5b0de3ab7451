"""One set of rules for uploaded archives, torch-free: the API applies them to every upload (a refused upload is a
422 naming the offending entry) and the library's loaders apply them again to every file they open, so an archive
that reached the store some other way is refused too. Allowlists throughout: what is not listed is refused.

Every zip (`.pt2`, `.npz`, the `torch.save` archive nested in a `.pt2`) -- `zipread`, `limits`:
- at most `max_entries` entries, checked from the end-of-directory record before zipfile parses the directory;
- entry names are relative POSIX paths: no leading `/`, drive letter, backslash, NUL, empty, `.` or `..`
  component; no name twice;
- only stored and deflated entries (bzip2/lzma decompress a member in one call, whatever its size); no encryption;
- members are read in 1 MiB chunks with a running byte count (header sizes are never believed) under
  `max_member_bytes` per member and `max_total_bytes` per archive; every member is read through so its CRC is
  checked; JSON and pickle members are capped at `max_metadata_bytes` before parsing, JSON nesting at
  `max_json_depth`, and a parse error (RecursionError included) or a JSON value of the wrong type is refused.

A `.pt2` -- `pt2`, `payloads`, `program_rules`, `symbolic`, `sample_inputs`:
- all entries in one top-level folder holding only: `archive_format` ("pt2"), `archive_version` ("0"),
  `byteorder` ("little"), `.data/version`, `.data/serialization_id`, exactly one `models/model.json`,
  `data/weights/model_weights_config.json` + `weight_<n>`, `data/constants/model_constants_config.json` +
  `tensor_<n>`, `data/sample_inputs/model.pt`, `extra/<name>` (never read). So no `data/aotinductor/` (native
  code), no legacy pickled `data/weights/model.pt` / `data/constants/model.pt`, no second model;
- every weights/constants config entry has `use_pickle: false`, a `weight_<n>`/`tensor_<n>` file (no
  `custom_obj_*`/`opaque_obj_*`), a known dtype, strided layout, cpu/cuda device and concrete sizes; the file
  exists, holds whole elements of one dtype and covers every view of it; no file is left unused; every
  parameter, buffer and tensor constant the signature lifts has its entry;
- call targets (nodes, `as_operator` arguments, nested graphs of higher-order ops) only from
  `torch.ops.{aten,prims,quantized_decomposed,torchao}.<op>.<overload>` (not `aten.from_file`/`aten.save`),
  listed `torch.ops.higher_order.*` ops, and the symbolic-integer functions `_operator.*`, `math.trunc`,
  `torch.sym_*`; no `#` extension ops, no custom objects;
- symbolic expressions (`expr_str`) and `guards_code` pass a strict tokenizer (integers, allowlisted names,
  operators, parentheses, commas; no attribute access beyond guards' size methods; bounded exponents);
  range-constraint keys are symbol names; node, argument, keyword and forward-argument names are identifiers;
  parameter/buffer/module paths are dotted names; graph inputs are tensors or numbers (a string placeholder
  would be pasted into guard code); pytree specs name types by dotted paths and hold no enum references;
- sample inputs: the nested archive's `data.pkl` is run on a symbolic pickle machine that allows only the tensor
  rebuilders, storage types and OrderedDict globals and the opcodes `torch.save` writes for tensors in
  tuples/dicts; the result is `(tuple, dict)` of tensors and numbers with identifier keys, and each storage's
  file has exactly its byte size. The library's loader then loads them with `weights_only=True` itself.

An `.npz` -- `npz`: members named `<split>.<array>.npy`, numeric dtypes, headers read by numpy's bounded header
parser, and each member's real size equal to its header plus shape x itemsize, so neither a header claiming
10**12 rows nor a member expanding past its shape gets through; labels are scanned in chunks, arrays loaded into
buffers of the checked size; nothing is unpickled.
"""

from compression.archive.errors import InvalidUpload
from compression.archive.limits import DEFAULT_LIMITS, ArchiveLimits

__all__ = ["DEFAULT_LIMITS", "ArchiveLimits", "InvalidUpload"]
