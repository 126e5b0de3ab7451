"""A DETR-family checkpoint whose ResNet backbone was saved from timm (the Hub's facebook/detr-resnet-50 and its
kin) is rewritten to transformers' own ResNet (`compression.timm_resnet`): timm is not installed, and the rewritten
folder computes what the checkpoint computes."""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from compression.archive import InvalidUpload
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from compression.timm_resnet import convert_timm_resnet
from tests.hf_folders import DETECTION_PROCESSOR, zip_bytes

# transformers' ResNetBackbone names -> timm's ResNet names (conv1/bn1 stem, layerN.M blocks, downsample shortcut)
TIMM_NAMES = [(r"embedder\.embedder\.convolution\.", "conv1."), (r"embedder\.embedder\.normalization\.", "bn1."),
              (r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.",
               lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0."),
              (r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.",
               lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1."),
              (r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.",
               lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
              (r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.",
               lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.")]


def _timm_name(name: str) -> str:
    for pattern, replacement in TIMM_NAMES:
        name = re.sub(pattern, replacement, name)
    return name.replace("model.backbone.model.", "model.backbone.conv_encoder.model.")


def _detr(folder, layer_type: str):
    """A tiny DETR over transformers' ResNet, saved as it is (the reference) and with its backbone as timm saves it
    (`use_timm_backbone`, timm's tensor names, BatchNorm counters)."""
    from transformers import DetrConfig, DetrForObjectDetection

    torch.manual_seed(0)
    widths = [16, 32, 48, 64] if layer_type == "bottleneck" else [8, 16, 24, 32]
    backbone = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": widths, "depths": [2, 1, 1, 1],
                "layer_type": layer_type, "out_features": ["stage4"]}
    config = DetrConfig(backbone_config=backbone, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10,
                        num_labels=3)
    model = DetrForObjectDetection(config).eval()
    with torch.no_grad():  # batch statistics a trained backbone would have
        for name, buffer in model.named_buffers():
            if "running_var" in name or "running_mean" in name:
                buffer.uniform_(0.5, 1.5)
    model.save_pretrained(folder / "reference")
    timm = folder / "timm"
    shutil.copytree(folder / "reference", timm)
    tensors = load_file(timm / "model.safetensors")
    renamed = {_timm_name(name): tensor for name, tensor in tensors.items()}
    renamed |= {name.replace("running_var", "num_batches_tracked"): torch.tensor(0) for name in renamed
                if name.endswith("bn1.running_var")}
    save_file(renamed, timm / "model.safetensors", metadata={"format": "pt"})
    document = json.loads((timm / "config.json").read_text())
    del document["backbone_config"]
    document |= {"use_timm_backbone": True, "backbone": "resnet50", "use_pretrained_backbone": True}
    (timm / "config.json").write_text(json.dumps(document))
    (timm / "preprocessor_config.json").write_text(json.dumps(DETECTION_PROCESSOR))
    return model, timm


@pytest.mark.parametrize("layer_type", ["bottleneck", "basic"])
def test_a_timm_resnet_backbone_becomes_transformers_own_and_computes_the_same(tmp_path, layer_type):
    from transformers import DetrForObjectDetection

    model, timm = _detr(tmp_path, layer_type)
    assert any(".layer1.0.conv1.weight" in name for name in load_file(timm / "model.safetensors"))
    assert convert_timm_resnet(timm)
    backbone = json.loads((timm / "config.json").read_text())["backbone_config"]
    assert backbone["model_type"] == "resnet" and backbone["layer_type"] == layer_type
    assert backbone["depths"] == [2, 1, 1, 1] and backbone["out_indices"] == [1, 2, 3, 4]
    converted = DetrForObjectDetection.from_pretrained(timm).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(pixel_values=images), converted(pixel_values=images)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes)
    assert not convert_timm_resnet(timm)  # nothing left to rewrite


def test_a_job_on_a_timm_backbone_detector_runs_and_other_timm_backbones_are_refused(tmp_path):
    _, timm = _detr(tmp_path, "bottleneck")
    archive = tmp_path / "detr.zip"
    archive.write_bytes(zip_bytes(timm))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "images.npz", **{f"{split}.x": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
                                         for split in ("train", "val")})
    result = run_folder_pipeline(archive, tmp_path / "images.npz", None, [PTQSpec(calibration_samples=4)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "detection_map" and result.stages[0].metrics["metric"] == "detection_map"
    tensors = load_file(timm / "model.safetensors")
    deep_stem = {name.replace(".conv1.weight", ".conv1.0.weight") if name.endswith("model.conv1.weight") else name:
                 tensor for name, tensor in tensors.items()}
    save_file(deep_stem, timm / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InvalidUpload, match="timm's 'resnet50'.* not a plain ResNet|this one is not"):
        convert_timm_resnet(timm)


def test_a_deformable_detr_reads_the_last_three_stages_of_the_rewritten_backbone(tmp_path):
    """Deformable DETR's timm backbone gives stages 2-4 (`out_indices` [2, 3, 4]) to its multi-scale encoder."""
    from transformers import DeformableDetrConfig, DeformableDetrForObjectDetection

    torch.manual_seed(0)
    backbone = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [16, 32, 48, 64], "depths": [1, 1, 1, 1],
                "layer_type": "bottleneck", "out_features": ["stage2", "stage3", "stage4"]}
    config = DeformableDetrConfig(backbone_config=backbone, d_model=32, encoder_layers=1, decoder_layers=2,
                                  encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2,
                                  decoder_attention_heads=2, num_queries=10, num_labels=3, num_feature_levels=4,
                                  encoder_n_points=2, decoder_n_points=2)
    model = DeformableDetrForObjectDetection(config).eval()
    model.save_pretrained(tmp_path / "timm")
    tensors = load_file(tmp_path / "timm" / "model.safetensors")
    save_file({_timm_name(name): tensor for name, tensor in tensors.items()}, tmp_path / "timm" / "model.safetensors",
              metadata={"format": "pt"})
    document = json.loads((tmp_path / "timm" / "config.json").read_text())
    del document["backbone_config"]
    (tmp_path / "timm" / "config.json").write_text(json.dumps(document | {"use_timm_backbone": True,
                                                                         "backbone": "resnet50"}))
    assert convert_timm_resnet(tmp_path / "timm")
    assert json.loads((tmp_path / "timm" / "config.json").read_text())["backbone_config"]["out_indices"] == [2, 3, 4]
    converted = DeformableDetrForObjectDetection.from_pretrained(tmp_path / "timm").eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(pixel_values=images), converted(pixel_values=images)
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.pred_boxes, expected.pred_boxes)
