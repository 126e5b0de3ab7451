"""A detector checkpoint whose ResNet backbone was saved from timm, rewritten to transformers' own ResNet.

DETR, Conditional and Deformable DETR, DAB-DETR and Table Transformer checkpoints on the Hub (facebook/detr-resnet-50,
microsoft/table-transformer-detection, ...) build their backbone with the timm library (`use_timm_backbone`, the
default of those configs). timm is not installed here (it needs torchvision, which the service's torch build does not
run), so loading such a folder failed with transformers' "TimmBackbone requires the timm library". A timm ResNet and
transformers' `ResNetBackbone` compute the same function with other names (`layer2.0.conv1` is
`encoder.stages.1.layers.0.layer.0.convolution`): the worker renames the backbone's tensors, and writes config.json
with a `resnet` backbone config read from the tensors' shapes (stem width, blocks per stage, basic or bottleneck
blocks, stage widths), the stages the model reads kept. The folders a job writes are in that form, which
`from_pretrained` loads without timm.

A timm backbone that is not a plain ResNet (a deep stem's `conv1.0`, another family) or that dilates its last stage
(DETR's DC5 checkpoints) has no such equivalent and is refused with that reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from compression.archive.errors import InvalidUpload

# A timm ResNet's tensor names under the detector's backbone module: the stem, and blocks of the four stages.
_STEM = re.compile(r"^(?P<prefix>.*backbone\.(?:conv_encoder\.)?model\.)(?P<conv>conv1|bn1)\.(?P<rest>[^.]+)$")
_BLOCK = re.compile(r"^(?P<prefix>.*backbone\.(?:conv_encoder\.)?model\.)layer(?P<stage>[1-4])\.(?P<block>\d+)\."
                    r"(?P<part>conv[1-3]|bn[1-3]|downsample\.[01])\.(?P<rest>[^.]+)$")
_DEEP_STEM = re.compile(r"backbone\.(?:conv_encoder\.)?model\.conv1\.\d+\.")


def timm_resnet_names(names: list[str]) -> bool:
    """Whether a checkpoint's tensor names hold a timm ResNet backbone."""
    return any(_STEM.match(name) for name in names) and any(_BLOCK.match(name) for name in names)


def renamed(name: str) -> str | None:
    """transformers' ResNetBackbone name of a timm ResNet tensor (None: not one; "" for a BatchNorm's
    `num_batches_tracked`, which the frozen batch norm of these detectors does not keep)."""
    if name.endswith("num_batches_tracked") and (_STEM.match(name) or _BLOCK.match(name)):
        return ""
    if match := _STEM.match(name):
        module = "convolution" if match["conv"] == "conv1" else "normalization"
        return f"{match['prefix']}embedder.embedder.{module}.{match['rest']}"
    if match := _BLOCK.match(name):
        part = match["part"]
        if part.startswith("downsample"):
            module = "shortcut." + ("convolution" if part.endswith("0") else "normalization")
        else:
            module = f"layer.{int(part[-1]) - 1}." + ("convolution" if part.startswith("conv") else "normalization")
        return (f"{match['prefix']}encoder.stages.{int(match['stage']) - 1}.layers.{match['block']}.{module}."
                f"{match['rest']}")
    return None


def resnet_config(shapes: dict[str, list[int]], out_indices: list[int]) -> dict:
    """transformers' ResNetConfig (as config.json's `backbone_config`) of the timm ResNet whose tensor shapes these
    are (timm names), reading the stages in `out_indices` (1-4: the stages; timm counts them as transformers
    does, 0 being the stem)."""
    blocks: dict[int, set[int]] = {}
    convolutions: dict[tuple[int, int, str], int] = {}  # (stage, block, conv) -> output channels
    for name, shape in shapes.items():
        if (match := _BLOCK.match(name)) and match["part"].startswith("conv") and match["rest"] == "weight":
            stage, block = int(match["stage"]), int(match["block"])
            blocks.setdefault(stage, set()).add(block)
            convolutions[stage, block, match["part"]] = shape[0]
    bottleneck = any(part == "conv3" for _, _, part in convolutions)
    last = "conv3" if bottleneck else "conv2"  # the block's output convolution
    stem = next(shape for name, shape in shapes.items() if (m := _STEM.match(name)) and m["conv"] == "conv1"
                and m["rest"] == "weight")
    if sorted(blocks) != [1, 2, 3, 4] or any(sorted(found) != list(range(len(found))) for found in blocks.values()):
        raise InvalidUpload(f"the detector's timm backbone has stages {sorted(blocks)} with blocks "
                            f"{[sorted(blocks[s]) for s in sorted(blocks)]}: not a four-stage ResNet, which is the "
                            "only timm backbone the service rewrites for transformers (timm itself is not installed)")
    if bottleneck and any(convolutions[stage, 0, "conv1"] * 4 != convolutions[stage, 0, last] for stage in blocks):
        raise InvalidUpload("the detector's timm ResNet has bottlenecks wider than a quarter of their output (a "
                            "wide ResNet), which transformers' ResNet cannot hold; upload the model exported as a "
                            ".pt2")
    return {"model_type": "resnet", "num_channels": stem[1], "embedding_size": stem[0],
            "hidden_sizes": [convolutions[stage, 0, last] for stage in (1, 2, 3, 4)],
            "depths": [len(blocks[stage]) for stage in (1, 2, 3, 4)],
            "layer_type": "bottleneck" if bottleneck else "basic", "out_indices": list(out_indices)}


def convert_timm_resnet(folder: Path) -> bool:
    """Rewrite, in place, an extracted detector folder whose backbone is a timm ResNet (`use_timm_backbone`, or
    timm-named backbone tensors) into transformers' ResNet form; False where there is nothing to rewrite.
    Refused with the reason where the timm backbone has no transformers equivalent."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    files = sorted(folder.glob("*.safetensors"))
    shapes: dict[str, list[int]] = {}
    for path in files:
        with safe_open(path, "pt") as weights:
            shapes |= {name: list(weights.get_slice(name).get_shape()) for name in weights.keys()}
    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    backbone = getattr(config, "backbone_config", None)
    timm_config = getattr(backbone, "model_type", None) == "timm_backbone"
    if not timm_config and not timm_resnet_names(list(shapes)):
        return False
    name = getattr(backbone, "backbone", None) if timm_config else "resnet"
    if any(_DEEP_STEM.search(tensor) for tensor in shapes) or not timm_resnet_names(list(shapes)):
        raise InvalidUpload(f"the detector's backbone is timm's '{name}', which needs the timm library (not "
                            "installed here: it needs torchvision); the service rewrites a plain timm ResNet "
                            "backbone for transformers' own, and this one is not: save the model with a "
                            "transformers backbone (use_timm_backbone=False) or upload a .pt2")
    if getattr(backbone, "output_stride", None) or getattr(config, "dilation", False):
        raise InvalidUpload("the detector's timm ResNet dilates its last stage (a DC5 checkpoint), which "
                            "transformers' ResNet cannot; upload the model exported as a .pt2")
    out_indices = list(getattr(backbone, "out_indices", None) or [4])
    document = json.loads((folder / "config.json").read_text())
    for key in ("use_timm_backbone", "backbone", "backbone_kwargs", "use_pretrained_backbone"):
        document.pop(key, None)
    document["backbone_config"] = resnet_config(shapes, out_indices)
    document["use_timm_backbone"] = False
    (folder / "config.json").write_text(json.dumps(document, indent=2))
    names = converted_names(list(shapes))
    for path in files:
        save_file({names[name]: tensor for name, tensor in load_file(path).items() if name in names}, path,
                  metadata={"format": "pt"})
    index = folder / "model.safetensors.index.json"
    if index.exists():
        document = json.loads(index.read_text())
        document["weight_map"] = {names[name]: file for name, file in document.get("weight_map", {}).items()
                                  if name in names}
        index.write_text(json.dumps(document, indent=2))
    return True


def converted_names(names: list[str]) -> dict[str, str]:
    """Each tensor's name in the rewritten folder: a timm backbone tensor's transformers name (`renamed`), any
    other tensor's own; the batch norms' counters, which are dropped, are left out."""
    converted = {name: renamed(name) for name in names}
    return {name: name if new is None else new for name, new in converted.items() if new != ""}
