"""A model whose forward draws random numbers is refused before any stage: its outputs move by themselves, and
every stage was judged by that noise (a tiny ViT-MAE, whose base model masks random patches at inference, "ran" and
warned of collapses)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.io import export_model, save_program
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import VIT_PROCESSOR, zip_bytes

RANDOM = "the model's output changes between two runs on the same inputs: its forward draws random numbers"


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 4)

    def forward(self, x):
        return self.layer(x + torch.randn_like(x))  # a sampling step left in at inference


def test_a_program_that_draws_random_numbers_is_refused_before_any_stage(tmp_path):
    x = torch.randn(4, 8)
    save_program(export_model(_Noisy().eval(), (x,)), tmp_path / "model.pt2")
    np.savez(tmp_path / "data.npz", **{f"{split}.x": np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32)
                                       for split in ("train", "val")})
    with pytest.raises(ValueError, match=RANDOM):
        run_pipeline(tmp_path / "model.pt2", tmp_path / "data.npz", [PTQSpec()], EvaluationSpec(latency=False),
                     RunContext(), tmp_path / "work")


def test_a_vit_mae_base_model_is_refused_for_its_random_masking(tmp_path):
    from transformers import ViTMAEConfig, ViTMAEModel

    torch.manual_seed(0)
    ViTMAEModel(ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64)).save_pretrained(tmp_path / "mae")
    (tmp_path / "mae" / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    (tmp_path / "mae.zip").write_bytes(zip_bytes(tmp_path / "mae"))
    pixels = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"train.x": pixels[:8], "val.x": pixels[8:]})
    with pytest.raises(ValueError, match=RANDOM):
        run_folder_pipeline(tmp_path / "mae.zip", tmp_path / "images.npz", None, [PTQSpec()],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")

