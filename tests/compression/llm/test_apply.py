import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from compression import formats
from compression.context import Cancelled, RunContext
from compression.formats import hf_folder
from compression.llm import apply_llm_ptq
from compression.llm.evaluate import load_quantized
from compression.specs.llm import LLMPTQSpec
from tests.compression.llm.conftest import tiny_llama

LOAD_IN_FRESH_PROCESS = textwrap.dedent("""
    import sys, torch
    from safetensors.torch import save_file
    from compression.llm.evaluate import load_quantized
    tokens = torch.load(sys.argv[1], weights_only=True)
    logits = {}
    for index, folder in enumerate(sys.argv[3:]):
        model = load_quantized(folder)
        with torch.no_grad():
            logits[str(index)] = model(input_ids=tokens).logits.float().contiguous()
    save_file(logits, sys.argv[2])
""")


def _logits_in_fresh_process(tmp_path, folders, tokens):
    torch.save(tokens, tmp_path / "tokens.pt")
    out = tmp_path / "logits.safetensors"
    subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(tmp_path / "tokens.pt"), str(out),
                    *map(str, folders)], check=True, capture_output=True, timeout=300)
    logits = load_file(out)
    return [logits[str(i)] for i in range(len(folders))]


def _logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens).logits.float()


SPECS = {  # spec, most relative logit error allowed on this random model (RTN int4 g64 gives 0.23)
    "gptq_int4_g32": (LLMPTQSpec(algorithm="gptq", bits=4, group_size=32), 0.15),
    "awq_int4_g64": (LLMPTQSpec(algorithm="awq", bits=4, group_size=64), 0.2),
    "hqq_int4_g64_asym": (LLMPTQSpec(algorithm="hqq", bits=4, group_size=64), 0.25),
    "rtn_fp8": (LLMPTQSpec(algorithm="rtn", weights="fp8", group_size=None), 0.05),
    "rtn_int8_head_and_embeddings": (LLMPTQSpec(algorithm="rtn", bits=8, group_size=None, lm_head="quantize",
                                                embeddings="int8"), 0.03),
    "gptq_int3_g32_head": (LLMPTQSpec(algorithm="gptq", bits=3, group_size=32, lm_head="quantize"), 0.35),
}


def test_folders_load_with_transformers_in_a_fresh_process_and_compute_what_the_library_computed(
        tmp_path, calibration_tokens):
    """Each spec runs on an in-memory model (whose weights become the dequantized ones) and writes a folder; a
    fresh process loads every folder with transformers and must get the in-memory model's logits."""
    tokens = calibration_tokens[:2]
    original = _logits(tiny_llama(), tokens)
    folders, expected, results = [], [], {}
    for name, (spec, _) in SPECS.items():
        model = tiny_llama()
        results[name] = apply_llm_ptq(spec, model, tmp_path / name, calibration_tokens)
        folders.append(tmp_path / name)
        expected.append(_logits(model, tokens))
    loaded = _logits_in_fresh_process(tmp_path, folders, tokens)
    for name, want, got in zip(SPECS, expected, loaded):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), name
        assert not torch.allclose(got, original, atol=1e-3), name  # really quantized
        relative = float((got - original).norm() / original.norm())
        assert relative < SPECS[name][1], (name, relative)
    fp8 = json.loads((tmp_path / "rtn_fp8" / "config.json").read_text())["quantization_config"]
    assert fp8["format"] == "float-quantized"
    assert fp8["config_groups"]["group_0"]["weights"]["type"] == "float"
    gptq = json.loads((tmp_path / "gptq_int4_g32" / "config.json").read_text())["quantization_config"]
    assert gptq["format"] == "pack-quantized" and gptq["ignore"] == ["lm_head"]
    assert gptq["config_groups"]["group_0"]["weights"] == {
        "num_bits": 4, "type": "int", "symmetric": True, "group_size": 32, "strategy": "group",
        "actorder": "weight", "dynamic": False}
    assert results["gptq_int3_g32_head"].metrics["layers"]["lm_head"]["output_error"] < 0.1
    assert "model.embed_tokens" in results["rtn_int8_head_and_embeddings"].metrics["layers"]


def test_a_layer_the_group_size_does_not_divide_takes_the_largest_group_that_fits(tmp_path, calibration_tokens):
    """SmolLM's 576-wide layers take no group of 128: each such layer takes the largest of 64 and 32 that divides
    its width, else one scale per output channel; the folder's config names those layers with their scheme, and
    transformers loads it computing what the stage computed."""
    model = tiny_llama(hidden=80)  # attention, gate/up and lm_head read 80 columns (no group fits), down 160 (32)
    spec = LLMPTQSpec(algorithm="gptq", bits=4, group_size=128, lm_head="quantize")
    result = apply_llm_ptq(spec, model, tmp_path / "q", calibration_tokens)
    fitted = {name: layer["group_size"] for name, layer in result.metrics["layers"].items()}
    assert fitted == {name: 32 if name.endswith("down_proj") else None for name in fitted} and len(fitted) == 15
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    schemes = {len(group["targets"]): group["weights"] for group in config["config_groups"].values()}
    assert schemes[1]["group_size"] == 128  # the class target "Linear": what the spec asked for
    assert (schemes[2]["strategy"], schemes[2]["group_size"]) == ("group", 32)  # the two down_proj layers
    assert (schemes[13]["strategy"], schemes[13].get("group_size")) == ("channel", None)
    assert result.metrics["warnings"] == [
        "group_size 128 does not divide the input width of 15 layer(s): 13 use one scale per output channel, "
        "2 use group_size 32 (metrics.layers gives each one's group_size)"]
    tokens = calibration_tokens[:2]
    [loaded] = _logits_in_fresh_process(tmp_path, [tmp_path / "q"], tokens)
    assert torch.allclose(loaded, _logits(model, tokens), atol=1e-4, rtol=1e-4)


def test_zero_points_take_one_group_size_for_all_layers_and_load_from_the_recipe(tmp_path, calibration_tokens):
    """transformers loads packed zero points only by decompressing the folder in one format, so an asymmetric
    spec whose group size some widths refuse takes one that divides them all; the artifact's recipe loads it."""
    model = tiny_llama(hidden=96)  # attention and gate/up read 96 columns (no group of 64), down 192
    model.config.architectures = ["LlamaForCausalLM"]  # what a saved folder's config names, and the recipe loads
    spec = LLMPTQSpec(algorithm="hqq", bits=4, group_size=64)
    result = apply_llm_ptq(spec, model, tmp_path / "q", calibration_tokens)
    assert result.metrics["group_size"] == 32 and result.metrics["symmetric"] is False
    assert result.metrics["warnings"] == [
        "group_size 64 does not divide the input width(s) [96]; with zero points (asymmetric weights) transformers "
        "loads a folder in one format only, so every layer uses group_size 32"]
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    [scheme] = config["config_groups"].values()
    assert (scheme["format"], scheme["weights"]["group_size"], scheme["weights"]["symmetric"]) == (
        "pack-quantized", 32, False)

    tokens = calibration_tokens[:2]
    torch.save(tokens, tmp_path / "tokens.pt")
    formats.format_of(hf_folder.KIND).write(tmp_path / "q", tmp_path / "model.hf.zip")
    code = formats.recipe(hf_folder.KIND, "model.hf.zip") + textwrap.dedent("""
        import sys
        import torch
        from safetensors.torch import save_file
        with torch.no_grad():
            logits = model.eval()(input_ids=torch.load("tokens.pt", weights_only=True)).logits
        save_file({"logits": logits.contiguous()}, "logits.safetensors")
        assert "compression" not in sys.modules, "the recipe needs this library"
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = _logits(model, tokens)
    assert torch.allclose(load_file(tmp_path / "logits.safetensors")["logits"], expected, atol=1e-4, rtol=1e-4)


def test_sizes_and_per_layer_errors_are_reported(tmp_path, llama_folder, calibration_tokens):
    source_bytes = sum(p.stat().st_size for p in llama_folder.glob("*.safetensors"))
    result = apply_llm_ptq(LLMPTQSpec(algorithm="gptq", bits=4, group_size=32), llama_folder, tmp_path / "q",
                           calibration_tokens)
    with pytest.raises(ValueError, match="already quantized"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), tmp_path / "q", tmp_path / "qq")
    metrics = result.metrics
    assert metrics["bytes"] == sum(p.stat().st_size for p in (tmp_path / "q").glob("*.safetensors"))
    block_bytes = 4 * (2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 256)  # fp32 linears of one block
    assert metrics["bytes"] < source_bytes - 2 * block_bytes * 0.75  # linears shrink ~7x; embeddings/head stay
    assert len(metrics["layers"]) == 2 * 7
    assert all(0 < layer["output_error"] < 0.05 and layer["sqnr_db"] > 10 for layer in metrics["layers"].values())
    assert (tmp_path / "q" / "model.safetensors.index.json").exists()
    # a second run into the same folder with fewer shards leaves none of the first run's behind
    (tmp_path / "q" / "model-00009-of-00009.safetensors").write_bytes(b"stale")
    again = apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), llama_folder, tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").glob("*.safetensors")) == [
        "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]
    assert again.metrics["bytes"] == sum(p.stat().st_size for p in (tmp_path / "q").glob("*.safetensors"))


def test_gptq_beats_rtn_on_the_whole_model(tmp_path, llama_folder, calibration_tokens):
    errors = {}
    for algorithm in ("rtn", "gptq"):
        spec = LLMPTQSpec(algorithm=algorithm, bits=3, group_size=64)
        errors[algorithm] = apply_llm_ptq(spec, llama_folder, tmp_path / algorithm, calibration_tokens
                                          ).metrics["mean_output_error"]
    assert errors["gptq"] < 0.7 * errors["rtn"]


def test_streaming_holds_one_block_at_a_time(tmp_path, llama_folder, calibration_tokens):
    from compression.llm import apply as apply_module

    loaded_counts = []
    original_load = apply_module.LayerwiseModel.load

    def spying_load(source):
        model = original_load(source)
        model_blocks = model.blocks
        ctx.report = lambda event: loaded_counts.append(
            sum(not next(block.parameters()).is_meta for block in model_blocks))
        return model

    ctx = RunContext()
    apply_module.LayerwiseModel.load = staticmethod(spying_load)
    try:
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), llama_folder, tmp_path / "q", calibration_tokens, ctx)
    finally:
        apply_module.LayerwiseModel.load = original_load
    assert loaded_counts and max(loaded_counts) <= 1 and loaded_counts[-1] == 0


def test_a_killed_run_resumes_from_the_last_block_checkpoint(tmp_path, calibration_tokens):
    folder = tmp_path / "source"
    tiny_llama(layers=4).save_pretrained(folder)
    spec = LLMPTQSpec(algorithm="gptq", bits=4, group_size=32)
    checkpoints: dict[str, bytes] = {}
    events = []

    def stop_after_two_blocks():
        return "worker killed" if sum(e.phase == "quantize" and e.step == 2 for e in events) else None

    ctx = RunContext(report=events.append, should_stop=stop_after_two_blocks,
                     save_checkpoint=checkpoints.__setitem__, load_checkpoint=checkpoints.get)
    with pytest.raises(Cancelled):
        apply_llm_ptq(spec, folder, tmp_path / "first", calibration_tokens, ctx)
    assert sorted(checkpoints) == ["block_0", "block_1"]

    resumed = apply_llm_ptq(spec, folder, tmp_path / "resumed", calibration_tokens,
                            RunContext(save_checkpoint=checkpoints.__setitem__, load_checkpoint=checkpoints.get))
    uninterrupted = apply_llm_ptq(spec, folder, tmp_path / "whole", calibration_tokens)
    assert resumed.metrics["resumed_blocks"] == 2 and uninterrupted.metrics["resumed_blocks"] == 0
    for shard in sorted((tmp_path / "whole").glob("*.safetensors")):
        want, got = load_file(shard), load_file(tmp_path / "resumed" / shard.name)
        assert want.keys() == got.keys()
        assert all(torch.equal(want[key], got[key]) for key in want), shard.name
    # a checkpoint from another spec is not reused
    other = apply_llm_ptq(LLMPTQSpec(algorithm="gptq", bits=3, group_size=32), folder, tmp_path / "other",
                          calibration_tokens, RunContext(load_checkpoint=checkpoints.get))
    assert other.metrics["resumed_blocks"] == 0


def test_a_token_stream_is_cut_into_the_spec_s_calibration_windows(tmp_path, llama_folder):
    stream = torch.randint(0, 256, (500,), generator=torch.Generator().manual_seed(0))
    spec = LLMPTQSpec(algorithm="gptq", calibration={"samples": 6, "sequence_length": 20, "batch_size": 4})
    result = apply_llm_ptq(spec, llama_folder, tmp_path / "q", stream)
    assert result.metrics["calibration_tokens"] == 6 * 20


def test_tied_embeddings_and_bfloat16_sources(tmp_path, calibration_tokens):
    folder = tmp_path / "tied"
    tiny_llama(tie=True).to(torch.bfloat16).save_pretrained(folder)
    result = apply_llm_ptq(LLMPTQSpec(algorithm="rtn", lm_head="quantize"), folder, tmp_path / "q",
                           calibration_tokens)
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["dtype"] == "bfloat16"
    tensors = {}
    for shard in (tmp_path / "q").glob("*.safetensors"):
        tensors.update(load_file(shard))
    assert tensors["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert tensors["lm_head.weight_scale"].dtype == torch.bfloat16 and "lm_head.weight" not in tensors
    model = load_quantized(tmp_path / "q")
    assert torch.isfinite(_logits(model, calibration_tokens[:1])).all()
    assert result.metrics["layers"]["lm_head"]["sqnr_db"] > 10


def test_bad_inputs_are_refused_with_what_to_do(tmp_path, llama_folder):
    with pytest.raises(ValueError, match="needs calibration"):
        apply_llm_ptq(LLMPTQSpec(algorithm="gptq"), llama_folder, tmp_path / "q")
    with pytest.raises(ValueError, match="must not be the source folder"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), llama_folder, llama_folder)
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), tmp_path, tmp_path / "q")
    with pytest.raises(ValueError, match="must lie in"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), llama_folder, tmp_path / "q", torch.full((2, 8), 999))
    with pytest.raises(ValueError, match="integer token ids"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), llama_folder, tmp_path / "q", torch.rand(2, 8))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((llama_folder / "config.json").read_text())
    save_file({"model.embed_tokens.weight": torch.zeros(256, 128)}, broken / "model.safetensors")
    with pytest.raises(ValueError, match="weights missing"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn"), broken, tmp_path / "q")


def test_awq_runs_on_blocks_that_are_not_llamas_and_says_which_groups_it_left_unscaled(tmp_path, calibration_tokens):
    """OPT folds fc2's scales into fc1 across its ReLU; GPT-NeoX's GELU takes no scales, so its dense and
    dense_4h_to_h are clipped and rounded without them, which the stage's warnings say. Both folders load with
    transformers in a fresh process computing what the stage computed (AWQ was refused for both until
    2026-12-05)."""
    from bench.hf_architecture_sweep import tiny_model

    spec = LLMPTQSpec(algorithm="awq", bits=4, group_size=32, calibration={"sequence_length": 32})
    models, results = {}, {}
    for model_type in ("opt", "gpt_neox"):
        models[model_type] = tiny_model(model_type, "causal-lm").eval()
        results[model_type] = apply_llm_ptq(spec, models[model_type], tmp_path / model_type, calibration_tokens)
    opt = results["opt"].metrics["awq"]
    assert opt["unscaled_groups"] == [] and "warnings" not in results["opt"].metrics
    assert opt["scaled_groups"]["model.decoder.layers.0.fc2"]["folded_into"] == "fc1"
    assert opt["scaled_groups"]["model.decoder.layers.1.self_attn.out_proj"]["folded_into"] == "self_attn.v_proj"
    assert all(group["scaled_mse"] <= group["unscaled_mse"] for group in opt["scaled_groups"].values())
    neox = results["gpt_neox"].metrics
    assert neox["awq"]["unscaled_groups"] == [f"gpt_neox.layers.{index}.{name}" for index in (0, 1)
                                              for name in ("attention.dense", "mlp.dense_4h_to_h")]
    assert neox["awq"]["weights"]["unscaled"] >= 0.25 * sum(neox["awq"]["weights"].values())
    assert neox["warnings"] == [
        "awq scaled 4 of 8 groups of linear layers; the other 4, 38% of the quantized weights "
        "(metrics.awq.unscaled_groups), follow no layer that could take the scales without changing what the model "
        "computes, so they were only clipped and rounded"]
    tokens = calibration_tokens[:2]
    loaded = _logits_in_fresh_process(tmp_path, [tmp_path / "opt", tmp_path / "gpt_neox"], tokens)
    for model_type, got in zip(("opt", "gpt_neox"), loaded):
        assert torch.allclose(got, _logits(models[model_type], tokens), atol=1e-4, rtol=1e-4), model_type


def test_a_checkpoint_whose_names_transformers_renames_in_a_chain_is_streamed(tmp_path, calibration_tokens):
    """EXAONE 3 checkpoints store `transformer.h.0.attn.attention.out_proj`; transformers renames `.attn.attention.`
    to `.self_attn.` and then `.self_attn.out_proj.` to `.self_attn.o_proj.`. Streaming skipped the second renaming
    (it matches no stored name) and failed with "weights missing: model.layers.0.self_attn.o_proj.weight"."""
    from bench.hf_architecture_sweep import tiny_model

    model = tiny_model("exaone", "causal-lm").eval()
    model.save_pretrained(tmp_path / "source")
    result = apply_llm_ptq(LLMPTQSpec(algorithm="rtn", bits=8, group_size=None), tmp_path / "source",
                           tmp_path / "q", calibration_tokens)
    assert "model.layers.1.self_attn.o_proj" in result.metrics["layers"]
    tokens = calibration_tokens[:2]
    [loaded] = _logits_in_fresh_process(tmp_path, [tmp_path / "q"], tokens)
    original = _logits(model, tokens)
    assert float((loaded - original).norm() / original.norm()) < 0.02
