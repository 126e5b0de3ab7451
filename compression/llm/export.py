"""Hugging Face folders in compressed-tensors format, which vLLM serves and transformers loads
(`from_pretrained`, with the `compressed-tensors` package installed).

Per quantized linear `<name>`, as compressed-tensors' compressors lay it out (packing by its own `pack_to_int32`):
- int, format `pack-quantized`: `<name>.weight_packed` int32 [out, ceil(in * bits / 32)]: 32 consecutive codes of a
  row, each offset by 2^(bits-1) to unsigned, fill exactly `bits` int32 words, code j at bit j*bits of the group
  (crossing word boundaries for 3 bits); `<name>.weight_scale` [out, groups] in the model dtype;
  `<name>.weight_shape` int64 [2]; asymmetric only: `<name>.weight_zero_point` int32 packed the same way along
  the row axis [ceil(out * bits / 32), groups].
- FP8, format `float-quantized`: `<name>.weight` float8_e4m3fn [out, in] and `<name>.weight_scale` [out, 1].

Shards are written one at a time (one per decoder block, one for everything else), so the exporter never holds
more than one block.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from compression.archive.hf_folder import PREPROCESSOR_FILE, TOKENIZER_FILES
from compression.llm.quantize import QuantizedWeight, WeightFormat

# What a written folder takes over from its source unchanged: the tokenizer, generation settings and an image or
# audio model's processor settings, which its users prepare inputs with (the files an upload may hold for them).
SIDE_FILES = (*TOKENIZER_FILES, "generation_config.json", PREPROCESSOR_FILE)


def compressed_tensors(name: str, quantized: QuantizedWeight, packed: bool = True) -> dict[str, torch.Tensor]:
    """`packed=False` writes int8 codes unpacked as `<name>.weight` (format `int-quantized`, used for embedding
    tables, whose loader has no packed layout, and 8-bit layers), with `<name>.weight_zero_point` int8
    [out, groups] when asymmetric."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    fmt = quantized.format
    if fmt.kind == "fp8" or not packed:
        tensors = {f"{name}.weight": quantized.codes.contiguous(), f"{name}.weight_scale": quantized.scale.contiguous()}
        if quantized.zero_point is not None:
            tensors[f"{name}.weight_zero_point"] = quantized.zero_point.contiguous()
        return tensors
    tensors = {f"{name}.weight_packed": pack_to_int32(quantized.codes, fmt.bits),
               f"{name}.weight_scale": quantized.scale.contiguous(),
               f"{name}.weight_shape": torch.tensor(quantized.codes.shape, dtype=torch.int64)}
    if quantized.zero_point is not None:
        tensors[f"{name}.weight_zero_point"] = pack_to_int32(quantized.zero_point, fmt.bits, packed_dim=0)
    return tensors


def decompressed_weight(tensors: dict[str, torch.Tensor], name: str, fmt: WeightFormat) -> torch.Tensor:
    """The float weight a loader reconstructs from `compressed_tensors(name, ...)`."""
    return quantized_weight(tensors, name, fmt).dequantize()


def quantized_weight(tensors: dict[str, torch.Tensor], name: str, fmt: WeightFormat) -> QuantizedWeight:
    """The codes, scales and zero points `compressed_tensors(name, ...)` wrote (packed or not), unpacked."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    scale = tensors[f"{name}.weight_scale"]
    if f"{name}.weight_packed" not in tensors:
        return QuantizedWeight(tensors[f"{name}.weight"], scale, tensors.get(f"{name}.weight_zero_point"), fmt)
    shape = torch.Size(tensors[f"{name}.weight_shape"].tolist())
    codes = unpack_from_int32(tensors[f"{name}.weight_packed"], fmt.bits, shape)
    zero = tensors.get(f"{name}.weight_zero_point")
    if zero is not None:
        zero = unpack_from_int32(zero, fmt.bits, torch.Size((shape[0], scale.shape[1])), packed_dim=0)
    return QuantizedWeight(codes, scale, zero, fmt)


def weight_args(fmt: WeightFormat, act_order: bool) -> dict:
    if fmt.kind == "fp8":
        return {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "dynamic": False}
    args = {"num_bits": fmt.bits, "type": "int", "symmetric": fmt.symmetric, "dynamic": False,
            "strategy": "group" if fmt.group_size else "channel", "group_size": fmt.group_size}
    if act_order and fmt.group_size:
        args["actorder"] = "weight"
    return args


def quantization_config(fmt: WeightFormat, ignore: list[str], act_order: bool = False,
                        embedding: tuple[WeightFormat, str] | None = None,
                        fitted: dict[str, int | None] | None = None) -> dict:
    """The `quantization_config` of a causal LM's config.json: every Linear (and the input embedding table, given
    as its format and module name) quantized. The table is targeted by name: the class "Embedding" would also take
    position tables (OPT's learned positions, whose own forward compressed-tensors would replace). `fitted` names
    the layers quantized with another group size (None: per channel) than `fmt`'s, their width being no multiple
    of it; compressed-tensors prefers a module's own name over its class among the targets."""
    linear_format = "float-quantized" if fmt.kind == "fp8" else "pack-quantized"
    schemes = [{"targets": ["Linear"], "weights": weight_args(fmt, act_order), "format": linear_format}]
    for size in dict.fromkeys((fitted or {}).values()):
        names = sorted(name for name, fitted_size in fitted.items() if fitted_size == size)
        schemes.append({"targets": names, "weights": weight_args(replace(fmt, group_size=size), act_order),
                        "format": linear_format})
    if embedding is not None:
        table_format, table_name = embedding
        schemes.append({"targets": [table_name], "weights": weight_args(table_format, False),
                        "format": "int-quantized"})
    return config_from_schemes(schemes, ignore)


def config_from_schemes(schemes: list[dict], ignore: list[str]) -> dict:
    """A `quantization_config` of compressed-tensors schemes (each: `targets` (module classes or names), `weights`,
    optional `input_activations`, and its storage `format`), validated by compressed-tensors' own schema; used
    for causal LMs (`quantization_config`) and for encoders and classifiers (`compression.hf_folder_export`)."""
    from compressed_tensors.quantization import QuantizationConfig

    formats = {scheme["format"] for scheme in schemes}
    config = QuantizationConfig.model_validate({
        "config_groups": {f"group_{index}": scheme for index, scheme in enumerate(schemes)},
        "quant_method": "compressed-tensors",
        "format": formats.pop() if len(formats) == 1 else "mixed-precision",
        "quantization_status": "compressed", "ignore": ignore})
    return json.loads(config.model_dump_json(exclude_none=True))


class ShardWriter:
    """Writes `model-XXXXX-of-YYYYY.safetensors` shards and their index, one shard per `write` call."""

    def __init__(self, folder: Path, shards: int):
        self.folder, self.shards = folder, shards
        self.weight_map: dict[str, str] = {}
        self.total_bytes = 0
        self.written = 0
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("model-*-of-*.safetensors"):  # an earlier run's shards would mix with ours
            stale.unlink()

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        self.written += 1
        name = f"model-{self.written:05d}-of-{self.shards:05d}.safetensors"
        save_file({key: value.contiguous() for key, value in tensors.items()}, self.folder / name,
                  metadata={"format": "pt"})
        self.weight_map.update(dict.fromkeys(tensors, name))
        self.total_bytes += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self) -> None:
        if self.written != self.shards:
            raise RuntimeError(f"wrote {self.written} of {self.shards} shards")
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_config(folder: Path, config: dict, source: Path | None) -> None:
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    if source is not None:
        for name in SIDE_FILES:
            if (source / name).exists():
                shutil.copy2(source / name, folder / name)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))
