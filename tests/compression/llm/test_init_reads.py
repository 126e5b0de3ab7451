"""Layers an architecture's weight initialisation reads stay float, so that transformers loads the folder: Mamba's
mixer reads `out_proj.weight` and `dt_proj.weight`, GPT-BigCode's blocks `c_proj.weight`."""

import json

import pytest
import torch

from compression.llm import apply_llm_ptq
from compression.llm.evaluate import load_quantized
from compression.llm.init_reads import causal_lm_init_reads
from compression.llm.pipeline import check_applicable
from compression.specs.llm import LLMPTQSpec


def _mamba():
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, state_size=8, expand=2,
                         conv_kernel=4, time_step_rank=8)
    return MambaForCausalLM(config).eval()


def test_the_layers_read_are_found_without_touching_a_weight():
    from transformers import GPTBigCodeConfig, LlamaConfig

    mamba = _mamba()
    before = {name: tensor.clone() for name, tensor in mamba.state_dict().items()}
    assert causal_lm_init_reads(mamba.config) == [f"backbone.layers.{block}.mixer.{layer}"
                                              for block in (0, 1) for layer in ("dt_proj", "out_proj")]
    assert all(torch.equal(before[name], tensor) for name, tensor in mamba.state_dict().items())
    assert causal_lm_init_reads(GPTBigCodeConfig(n_embd=32, n_layer=1, n_head=2)) == [
        "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj"]
    # Llama's reads `getattr(module, "weight", None)`, which a quantized layer answers
    assert causal_lm_init_reads(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2)) == []


def test_a_mamba_folder_keeps_those_layers_float_and_loads_with_transformers(tmp_path):
    model = _mamba()
    tokens = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        original = model(input_ids=tokens).logits
    result = apply_llm_ptq(LLMPTQSpec(algorithm="gptq", bits=4, group_size=32), model, tmp_path / "q", tokens)
    kept = [name for name, reason in result.metrics["kept_float"].items() if "weight initialisation" in reason]
    assert kept == causal_lm_init_reads(model.config)
    assert set(result.metrics["layers"]) == {f"backbone.layers.{block}.mixer.{layer}"
                                             for block in (0, 1) for layer in ("in_proj", "x_proj")}
    ignore = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]["ignore"]
    assert set(kept) <= set(ignore)
    with torch.no_grad():
        loaded = load_quantized(tmp_path / "q")(input_ids=tokens).logits
        expected = model(input_ids=tokens).logits  # the in-memory model holds the dequantized weights
    assert torch.allclose(loaded, expected, atol=1e-4, rtol=1e-4)
    assert 0 < float((loaded - original).norm() / original.norm()) < 0.1


def test_an_architecture_whose_initialisation_reads_most_linear_weights_is_refused(tmp_path):
    from transformers import RwkvConfig

    RwkvConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
               intermediate_size=64).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="reads the float weight of linear layers holding 100%"):
        check_applicable(tmp_path, [LLMPTQSpec(algorithm="rtn")])
