"""Image-text models uploaded as causal LMs (Gemma 3 4B+, Mistral 3, Qwen2.5-VL, ...): llm_ptq quantizes the
language model's blocks and keeps the vision tower float, and the folder transformers loads computes what the
stage's model computed. transformers builds Gemma 3 as a causal LM, the others only as image-text-to-text
(`compression.causal_lm_class`); Mistral 3 ties its output layer in its own config, Qwen2.5-VL's checkpoint
names its tower `visual.` beside `model.`, which transformers renames on loading."""

import json

import pytest
import torch
from safetensors import safe_open

from bench.image_text_lms import image_text_folder
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.llm import apply_llm_ptq
from compression.llm.evaluate import load_quantized
from compression.llm.pipeline import check_applicable
from compression.specs.llm import LLMPTQSpec
from tests.hf_folders import zip_bytes

TOKENS = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_type", ["gemma3", "mistral3", "qwen2_5_vl"])
def test_an_image_text_models_language_model_is_quantized_and_its_vision_tower_kept(tmp_path, model_type):
    model = image_text_folder(model_type, tmp_path / "source")
    (tmp_path / "upload.zip").write_bytes(zip_bytes(tmp_path / "source"))
    folder = read_hf_folder(tmp_path / "upload.zip")
    assert folder.task == "causal-lm"  # what its architecture was saved for, not feature-extraction
    assert folder.block_linear_widths == [64, 128]  # the language model's widths
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


def test_an_image_text_model_that_needs_its_images_fails_with_that_said(tmp_path):
    from transformers import AutoConfig

    from bench.hf_architecture_sweep import save_tokenizer, text_dataset
    from compression.causal_lm_class import AutoCausalLM
    from compression.llm.pipeline import run_folder_pipeline
    from compression.specs import EvaluationSpec

    config = AutoConfig.for_model(
        "blip-2", num_query_tokens=4, image_token_index=300,
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "encoder_hidden_size": 32, "vocab_size": 320},
        text_config={"model_type": "opt", "vocab_size": 320, "hidden_size": 64, "ffn_dim": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "word_embed_proj_dim": 64})
    AutoCausalLM.from_config(config).save_pretrained(tmp_path / "source")
    save_tokenizer(tmp_path / "source")
    (tmp_path / "model.zip").write_bytes(zip_bytes(tmp_path / "source"))
    spec = LLMPTQSpec(algorithm="rtn", group_size=32, evaluation={"context_length": 16})
    with pytest.raises(ValueError, match=r"could not compute next-token logits from text alone \(TypeError: .*"
                                         r"'pixel_values'\)"):
        run_folder_pipeline(tmp_path / "model.zip", text_dataset(tmp_path), "causal-lm", [spec],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
