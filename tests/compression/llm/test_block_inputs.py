"""Each decoder block is replayed with the arguments the model gives it (`compression.llm.model`): Gemma 3's
sliding-window and global layers get different masks and rotary tables, so replaying every block with the first
one's computed another model for the global layers, and GPTQ calibrated them on it."""

import json

import pytest
import torch

from compression.llm.model import LayerwiseModel, run_block

TOKENS = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"], max_position_embeddings=64)
    return Gemma3ForCausalLM(config).eval()


def _replayed_logits(source: LayerwiseModel, hidden: list[torch.Tensor], kwargs_of) -> torch.Tensor:
    for index, block in enumerate(source.blocks):
        hidden = run_block(block, hidden, kwargs_of(index))
    with torch.no_grad():
        return source.model.lm_head(source.model.model.norm(hidden[0]))


def test_blocks_replayed_with_their_own_arguments_compute_the_model():
    model = _gemma3()
    with torch.no_grad():
        expected = model(input_ids=TOKENS, use_cache=False).logits
    source = LayerwiseModel(model)
    hidden, first = source.first_block_inputs([TOKENS])
    global_layer = source.block_kwargs(1)[0]
    assert global_layer["attention_mask"] is None and first[0]["attention_mask"] is not None  # sliding window
    assert not torch.equal(first[0]["position_embeddings"][0], global_layer["position_embeddings"][0])

    replayed = _replayed_logits(source, hidden, source.block_kwargs)

    softcap = model.config.final_logit_softcapping
    replayed = replayed if softcap is None else torch.tanh(replayed / softcap) * softcap
    assert torch.allclose(replayed, expected, atol=1e-5)
    # what every block replaying the first one's arguments computed
    assert not torch.allclose(_replayed_logits(source, hidden, lambda _: first), expected, atol=1e-3)


def test_gemma4_per_layer_inputs_are_replayed_and_its_folder_loads_as_computed(tmp_path):
    """Gemma 4 passes each block its own per-layer input, positionally (replaying block 0's for all failed with
    "Tensor * NoneType"), and holds a linear layer outside its blocks (`per_layer_model_projection`), which the
    folder must list as float: the "Linear" target had transformers expect it quantized and initialise it at
    random."""
    from bench.hf_architecture_sweep import tiny_model
    from compression.context import RunContext
    from compression.llm import apply_llm_ptq
    from compression.llm.evaluate import load_quantized
    from compression.specs.llm import LLMPTQSpec

    model = tiny_model("gemma4_text", "causal-lm")
    spec = LLMPTQSpec(algorithm="gptq", bits=8, group_size=None)
    result = apply_llm_ptq(spec, model, tmp_path / "out", TOKENS, RunContext())

    assert "model.per_layer_model_projection" in json.loads(
        (tmp_path / "out" / "config.json").read_text())["quantization_config"]["ignore"]
    assert all("output_error" in layer for name, layer in result.metrics["layers"].items() if ".layers." in name)
    with torch.no_grad():
        expected = model(input_ids=TOKENS, use_cache=False).logits
        loaded = load_quantized(tmp_path / "out")(input_ids=TOKENS, use_cache=False).logits
    assert torch.allclose(loaded, expected, atol=1e-4, rtol=1e-4)


def test_blocks_reusing_earlier_blocks_keys_and_values_are_refused_before_any_work(tmp_path):
    from bench.hf_architecture_sweep import tiny_model
    from compression.llm.pipeline import check_applicable
    from compression.specs.llm import LLMPTQSpec

    tiny_model("gemma4_text", "causal-lm").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())  # checked built without weights: config alone
    config |= {"num_hidden_layers": 3, "num_kv_shared_layers": 1,
               "layer_types": ["sliding_attention", "full_attention", "full_attention"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"reuse the keys and values of earlier blocks \(num_kv_shared_layers\)"):
        check_applicable(tmp_path, [LLMPTQSpec(algorithm="rtn")])

