"""`model.hf_folder`: a Hugging Face model folder in compressed-tensors format (safetensors + `config.json` with
its `quantization_config`), zipped: `from_pretrained` loads it with transformers and the compressed-tensors package
installed, and vLLM serves it. Written by `llm_ptq` for causal LMs (`compression.llm.export`) and, next to the
`.pt2`, for every stage of an encoder or classifier job whose model the architecture can express
(`compression.hf_folder_export`). `config.json` names the model class (`architectures`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

KIND = "model.hf_folder"
ARTIFACT_NAME = "model.hf.zip"
DESCRIPTION = "Hugging Face folder, compressed-tensors (zip)"
PACKAGES = ("transformers>=4.45", "compressed-tensors", "torch")
RECIPE = '''import json
import zipfile

import transformers

folder = "{path}".removesuffix(".zip")
zipfile.ZipFile("{path}").extractall(folder)
config = transformers.AutoConfig.from_pretrained(folder)
# Packed zero points (asymmetric pack-quantized weights, e.g. hqq's): transformers 5 loads them only with the
# weights decompressed to float (vllm-project/llm-compressor#1618); vLLM serves the folder as written.
quantization = json.load(open(folder + "/config.json")).get("quantization_config", {{}})  # none: a float model
packs_zero_points = any(
    not group["weights"].get("symmetric", True) and group.get("format", quantization.get("format")) == "pack-quantized"
    for group in quantization.get("config_groups", {{}}).values() if group.get("weights"))
options = {{}}
# An encoder-decoder (T5, BART, Marian) loads dequantized too: compressed-tensors decompresses its weights in a hook
# on the model's first call, which generate() skips (it runs the encoder alone first, on int8 codes), and its
# offloading wrappers turn the encoder's output into a dict that BART's forward cannot read.
if packs_zero_points or (quantization and config.is_encoder_decoder):
    options["quantization_config"] = transformers.CompressedTensorsConfig(dequantize=True)
# the class it was saved as (e.g. BertForSequenceClassification); AutoModel... classes load it the same way
model = getattr(transformers, config.architectures[0]).from_pretrained(folder, **options)
'''


def write(folder: str | Path, destination: str | Path) -> Path:
    """The folder's files at the top of a zip (stored: safetensors barely deflate), with its subfolders (a
    sentence-transformers folder's `1_Pooling/config.json`, and an entry for the empty `2_Normalize/`)."""
    folder, destination = Path(folder), Path(destination)
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() or path.is_dir():
                archive.write(path, path.relative_to(folder).as_posix())
    return destination


def load(path: str | Path):
    """What the recipe does: unzip next to the file and load the model class `config.json` names (no download,
    no remote code); a quantized encoder-decoder with its weights dequantized as it loads (the recipe says why)."""
    import transformers

    path = Path(path)
    folder = path.with_name(path.name.removesuffix(".zip"))
    with zipfile.ZipFile(path) as archive:
        archive.extractall(folder)
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    options = loading_options(folder)
    if config.is_encoder_decoder and getattr(config, "quantization_config", None):
        options = {"quantization_config": transformers.CompressedTensorsConfig(dequantize=True)}
    return getattr(transformers, config.architectures[0]).from_pretrained(
        folder, local_files_only=True, trust_remote_code=False, use_safetensors=True, **options)


def loading_options(folder: str | Path) -> dict:
    """`from_pretrained` options for a folder with packed zero points (asymmetric `pack-quantized` weights):
    transformers 5's compressed layout expects them unpacked and refuses them (vllm-project/llm-compressor#1618),
    so such a folder loads with its weights decompressed (`CompressedTensorsConfig(dequantize=True)`). None for
    any other folder, quantized or not."""
    if not _packs_zero_points(Path(folder) / "config.json"):
        return {}
    from transformers import CompressedTensorsConfig

    return {"quantization_config": CompressedTensorsConfig(dequantize=True)}


def _packs_zero_points(config_path: Path) -> bool:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return False  # from_pretrained says what is wrong with the folder
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    groups = quantization.get("config_groups") if isinstance(quantization, dict) else None
    if not isinstance(groups, dict):
        return False
    return any(isinstance(group, dict) and isinstance(group.get("weights"), dict)
               and group["weights"].get("symmetric", True) is False
               and group.get("format", quantization.get("format")) == "pack-quantized" for group in groups.values())
