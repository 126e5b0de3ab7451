"""Image-text models uploaded as causal LMs (Gemma 3 4B+, Mistral 3, Qwen2.5-VL, ...): llm_ptq quantizes the
language model's blocks and keeps the vision tower float, and the folder transformers loads computes what the
stage's model computed. transformers builds Gemma 3 as a causal LM, the others only as image-text-to-text
(`compression.causal_lm_class`); Mistral 3 ties its output layer in its own config, Qwen2.5-VL's checkpoint
names its tower `visual.` beside `model.`, which transformers renames on loading."""

import json

import pytest
import torch
from safetensors import safe_open

from bench.hf_architecture_sweep import save_tokenizer
from compression.archive.hf_folder import read_hf_folder
from compression.causal_lm_class import AutoCausalLM
from compression.context import RunContext
from compression.llm import apply_llm_ptq
from compression.llm.evaluate import load_quantized
from compression.llm.pipeline import check_applicable
from compression.specs.llm import LLMPTQSpec
from tests.hf_folders import zip_bytes

TOKENS = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
TEXT = {"vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}
# Each vision tower has as many layers as the text decoder and an MLP width (72) no group of 32 divides.
CONFIGS = {
    "gemma3": {"text_config": {**TEXT, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]},
               "vision_config": {"hidden_size": 32, "intermediate_size": 72, "num_hidden_layers": 2,
                                 "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
               "mm_tokens_per_image": 4, "image_token_index": 300, "boi_token_index": 301, "eoi_token_index": 302},
    "mistral3": {"text_config": {"model_type": "mistral", **TEXT},
                 "vision_config": {"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 72,
                                   "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
                                   "patch_size": 8, "head_dim": 16},
                 "image_token_index": 300},
    "qwen2_5_vl": {"text_config": {"model_type": "qwen2_5_vl_text", **TEXT,
                                   "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
                   "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 72, "num_heads": 2,
                                     "out_hidden_size": 64, "patch_size": 8, "window_size": 16,
                                     "fullatt_block_indexes": [1]},
                   "image_token_id": 300, "video_token_id": 301, "vision_start_token_id": 302},
}


def _image_text_model(model_type: str, folder):
    from transformers import AutoConfig

    torch.manual_seed(0)
    model = AutoCausalLM.from_config(AutoConfig.for_model(model_type, **CONFIGS[model_type])).eval()
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return model


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_an_image_text_models_language_model_is_quantized_and_its_vision_tower_kept(tmp_path, model_type):
    model = _image_text_model(model_type, tmp_path / "source")
    (tmp_path / "upload.zip").write_bytes(zip_bytes(tmp_path / "source"))
    folder = read_hf_folder(tmp_path / "upload.zip")
    assert folder.task == "causal-lm"  # what its architecture was saved for, not feature-extraction
    assert folder.block_linear_widths == [64, 128]  # the API's group-size check: the language model's widths
    spec = LLMPTQSpec(algorithm="gptq", bits=4, group_size=32)
    check_applicable(tmp_path / "source", [spec])

    streamed = apply_llm_ptq(spec, tmp_path / "source", tmp_path / "streamed", TOKENS, RunContext())
    apply_llm_ptq(spec, model, tmp_path / "in_memory", TOKENS, RunContext())  # `model` ends dequantized

    quantized = list(streamed.metrics["layers"])
    assert len(quantized) == 2 * 7 and all("language_model.layers." in name for name in quantized)
    ignore = json.loads((tmp_path / "streamed" / "config.json").read_text())["quantization_config"]["ignore"]
    assert any("visual" in name or "vision_tower" in name for name in ignore)
    with safe_open(next((tmp_path / "streamed").glob("model-00003-*.safetensors")), "pt") as handle:
        assert any(("visual" in name or "vision_tower" in name) and name.endswith(".weight") for name in handle.keys())
    loaded = load_quantized(tmp_path / "streamed")
    assert type(loaded) is type(model)
    with torch.no_grad():
        expected = model(input_ids=TOKENS, use_cache=False).logits
        assert torch.allclose(loaded(input_ids=TOKENS, use_cache=False).logits, expected, atol=1e-4, rtol=1e-4)
