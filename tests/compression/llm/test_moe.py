"""llm_ptq on mixtures of experts (`compression.llm.moe`): every expert quantized as its own linear layers,
written per expert under the checkpoint's names, and the folder transformers loads computes what the stage's
model computed."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from bench.hf_architecture_sweep import save_tokenizer, tiny_model
from compression.context import RunContext
from compression.llm import apply_llm_ptq
from compression.llm.blockwise import _input_groups
from compression.llm.evaluate import load_quantized
from compression.llm.model import LayerwiseModel
from compression.llm.moe import split_experts
from compression.llm.pipeline import check_applicable
from compression.specs.llm import LLMPTQSpec

CALIBRATION = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))


def _logits(model, tokens):
    with torch.no_grad():
        return model(input_ids=tokens, use_cache=False).logits.float()


def _stored_names(folder):
    names = []
    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as handle:
            names += list(handle.keys())
    return names


@pytest.mark.parametrize("model_type, spec", [
    ("mixtral", LLMPTQSpec(algorithm="gptq", bits=4, group_size=32)),  # gate and up stacked as one projection
    # a shared expert beside, and its single-output gate, kept float as vLLM keeps it
    ("qwen2_moe", LLMPTQSpec(algorithm="rtn", bits=8, group_size=None)),
    ("olmoe", LLMPTQSpec(algorithm="rtn", weights="fp8", group_size=None)),
    ("phimoe", LLMPTQSpec(algorithm="rtn", bits=4, group_size=32)),  # its router is an nn.Linear: kept float
    # AWQ scales every expert: the routers (Mixtral's own module, PhiMoE's float nn.Linear) take the scales too
    ("mixtral", LLMPTQSpec(algorithm="awq", bits=4, group_size=32)),
    ("phimoe", LLMPTQSpec(algorithm="awq", bits=4, group_size=32))])
def test_a_quantized_mixture_of_experts_loads_from_its_folder_as_the_stage_computed(tmp_path, model_type, spec):
    """In memory, the stage's model ends with each expert's dequantized weights; transformers loads the folder
    (per-expert tensors, decompressed and stacked again) into the same weights and logits."""
    model = tiny_model(model_type, "causal-lm")
    original = _logits(model, CALIBRATION[:2])

    result = apply_llm_ptq(spec, model, tmp_path / "out", CALIBRATION, RunContext())

    if spec.algorithm == "awq":
        awq = result.metrics["awq"]
        assert awq["unscaled_groups"] == [f"model.layers.{block}.self_attn.o_proj" for block in (0, 1)]  # GQA
        experts = awq["scaled_groups"][",".join(f"model.layers.1.mlp.experts.gate_up_proj.{n}" for n in range(4))]
        assert experts["folded_into"] == "post_attention_layernorm"
        assert experts["also_scaled"] == [{"mixtral": "mlp.gate", "phimoe": "mlp.router"}[model_type]]
        width = model.model.layers[1].mlp.experts.down_proj[0].in_features
        for expert in range(4):  # each expert's down_proj reads the product of its own gate and up halves
            assert awq["scaled_groups"][f"model.layers.1.mlp.experts.down_proj.{expert}"]["folded_into"] == (
                f"mlp.experts.gate_up_proj.{expert}[{width}:{2 * width}]")

    layers = result.metrics["layers"]
    experts = [name for name in layers if ".experts." in name]
    assert len(experts) == 2 * 2 * 4  # 2 blocks x 2 projections x 4 experts, each quantized with its own statistics
    assert all("output_error" in layers[name] for name in experts)
    assert not [name for name in layers if name.endswith(("shared_expert_gate", ".router", ".gate"))]
    config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert any(name.endswith(("shared_expert_gate", ".router")) for name in config["ignore"]) == (
        model_type in ("qwen2_moe", "phimoe"))
    loaded = load_quantized(tmp_path / "out")
    stacked = loaded.model.layers[1].mlp.experts
    assert stacked.down_proj.dim() == 3  # transformers stacked the per-expert layers again
    split = model.model.layers[1].mlp.experts
    for expert in range(4):
        assert torch.equal(stacked.down_proj[expert], split.down_proj[expert].weight)
        assert torch.equal(stacked.gate_up_proj[expert], split.gate_up_proj[expert].weight)
    folder_logits = _logits(loaded, CALIBRATION[:2])
    assert torch.allclose(folder_logits, _logits(model, CALIBRATION[:2]), atol=1e-4, rtol=1e-4)
    assert 0 < (folder_logits - original).norm() / original.norm() < 0.3


def test_a_mixture_of_experts_folder_is_written_with_the_checkpoints_names_and_the_uploads_tokenizer(tmp_path):
    source = tmp_path / "source"
    tiny_model("mixtral", "causal-lm").save_pretrained(source)
    save_tokenizer(source)
    spec = LLMPTQSpec(algorithm="gptq", bits=4, group_size=32)
    check_applicable(source, [spec])

    result = apply_llm_ptq(spec, source, tmp_path / "out", CALIBRATION, RunContext())

    stored = _stored_names(tmp_path / "out")
    # Mixtral's checkpoints name each expert's projections w1 (gate), w3 (up) and w2 (down)
    assert {"model.layers.0.block_sparse_moe.experts.3.w1.weight_packed",
            "model.layers.0.block_sparse_moe.experts.3.w3.weight_packed",
            "model.layers.0.block_sparse_moe.experts.3.w2.weight_packed"} <= set(stored)
    assert not [name for name in stored if name.endswith(("experts.gate_up_proj", "experts.down_proj"))]
    assert (tmp_path / "out" / "tokenizer.json").exists()
    assert result.metrics["bytes"] < sum(path.stat().st_size for path in source.glob("*.safetensors")) / 2
    assert load_quantized(tmp_path / "out").model.layers[0].mlp.experts.gate_up_proj.shape == (4, 256, 64)


def test_each_projections_experts_are_calibrated_together_after_the_layers_they_read():
    model = tiny_model("mixtral", "causal-lm")
    split_experts(model)
    source = LayerwiseModel(model)
    hidden, kwargs = source.first_block_inputs([CALIBRATION[:2]])
    groups = _input_groups(source.blocks[0], hidden, kwargs)
    gate_up = next(group for group in groups if "mlp.experts.gate_up_proj.0" in group)
    down = next(group for group in groups if "mlp.experts.down_proj.0" in group)
    assert gate_up == [f"mlp.experts.gate_up_proj.{expert}" for expert in range(4)]
    assert down == [f"mlp.experts.down_proj.{expert}" for expert in range(4)]
    assert groups.index(gate_up) < groups.index(down)


@pytest.mark.parametrize("model_type, reason", [
    ("gpt_oss", r"stored \[experts, in, out\] with biases"),
    ("granitemoe", "saves the experts .* stacked")])
def test_experts_no_folder_can_hold_per_expert_are_refused_before_any_work(tmp_path, model_type, reason):
    tiny_model(model_type, "causal-lm").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"cannot write this {model_type} mixture of experts.*{reason}"):
        check_applicable(tmp_path, [LLMPTQSpec(algorithm="rtn")])


def test_experts_with_zero_points_are_refused_before_any_work(tmp_path):
    """transformers 5 loads a folder's per-expert layers without their zero points (hqq is asymmetric)."""
    tiny_model("mixtral", "causal-lm").save_pretrained(tmp_path / "source")
    with pytest.raises(ValueError, match="loads without zero points"):
        check_applicable(tmp_path / "source", [LLMPTQSpec(algorithm="hqq")])
    with pytest.raises(ValueError, match="loads without zero points"):
        apply_llm_ptq(LLMPTQSpec(algorithm="rtn", symmetric=False), tmp_path / "source", tmp_path / "out")


def test_a_group_size_that_does_not_divide_the_experts_widths_is_refused_before_any_work(tmp_path):
    """Other layers take a group that fits (`WeightFormat.for_columns`), named in the folder's config; an expert's
    layer would be named there as stored, not as quantized."""
    tiny_model("mixtral", "causal-lm").save_pretrained(tmp_path / "source")
    with pytest.raises(ValueError, match=r"does not divide the input width\(s\) \[64\] of this model's experts; "
                                         "use group_size 64"):
        check_applicable(tmp_path / "source", [LLMPTQSpec(algorithm="rtn", group_size=128)])


def test_a_mixture_of_experts_run_resumes_from_its_block_checkpoints(tmp_path):
    """Blocks are checkpointed under the split names (a float gate among them) and renamed to the checkpoint's
    layout when written, so a resumed run writes the same folder as an uninterrupted one."""
    source = tmp_path / "source"
    tiny_model("qwen2_moe", "causal-lm").save_pretrained(source)
    spec = LLMPTQSpec(algorithm="gptq", bits=4, group_size=32)
    checkpoints: dict[str, bytes] = {}
    apply_llm_ptq(spec, source, tmp_path / "first", CALIBRATION,
                  RunContext(save_checkpoint=checkpoints.__setitem__, load_checkpoint=checkpoints.get))
    del checkpoints["block_1"]  # killed while quantizing the second block

    resumed = apply_llm_ptq(spec, source, tmp_path / "resumed", CALIBRATION,
                            RunContext(save_checkpoint=checkpoints.__setitem__, load_checkpoint=checkpoints.get))

    assert resumed.metrics["resumed_blocks"] == 1
    for shard in sorted((tmp_path / "first").glob("*.safetensors")):
        want, got = load_file(shard), load_file(tmp_path / "resumed" / shard.name)
        assert want.keys() == got.keys()
        assert all(torch.equal(want[key], got[key]) for key in want), shard.name
