"""Mixtures of experts (Mixtral, Qwen2-MoE, GPT-OSS, ...) run with each expert as its own linear layers
(`compression.moe_experts`): the program computes what transformers' sparse forward computes, and the methods
quantize the experts like any other linear layer."""

from pathlib import Path

import pytest
import torch

from bench.hf_architecture_sweep import folder_zip, text_dataset, tiny_model
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.io import export_model
from compression.llm.pipeline import run_folder_pipeline
from compression.llm.quantize import QuantizedWeight, WeightFormat
from compression.moe_experts import routing_weights, split_stacked_experts
from compression.moe_folder import (
    StackedExpertsNotWritable,
    checkpoint_experts,
    restack,
    split_source,
    stacked_projections,
)
from compression.ptq.int8_kernels import SATURATION_WARNING
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


# Mixtral: gate and up concatenated; GPT-OSS: stored transposed ([in, out]), with biases, gate and up interleaved
# and its own clamped gate; Qwen2-MoE: a shared expert beside the routed ones.
@pytest.mark.parametrize("model_type", ["mixtral", "gpt_oss", "qwen2_moe"])
def test_split_experts_compute_what_the_sparse_experts_compute_and_export(model_type):
    torch.manual_seed(0)
    model = tiny_model(model_type, "causal-lm").eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 3:  # distinct experts, so that a wrong routing would show
                parameter.normal_(std=0.2)
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        expected = _Logits(model)(ids, mask)
    split = split_stacked_experts(model)
    assert len(split) == model.config.num_hidden_layers
    assert not [name for name, parameter in model.named_parameters() if parameter.dim() == 3]
    assert isinstance(model.get_submodule(f"{split[0]}.down_proj.3"), torch.nn.Linear)
    with torch.no_grad():
        assert torch.allclose(_Logits(model)(ids, mask), expected, atol=1e-5)
        program = export_model(_Logits(model).eval(), (ids, mask))
        assert torch.allclose(program.module()(ids[:2], mask[:2]), expected[:2], atol=1e-5)


def test_routing_weights_are_dense_with_zeros_where_the_router_did_not_pick():
    index = torch.tensor([[2, 0], [1, 4]])  # 4: expert parallelism's sentinel, which the sparse forward skips
    weights = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    expected = torch.tensor([[0.3, 0.0, 0.7, 0.0], [0.0, 0.6, 0.0, 0.0]])
    assert torch.equal(routing_weights(index, weights, 4), expected)
    every = torch.rand(2, 4)  # a router that already weighs every expert passes through
    assert routing_weights(torch.tensor([[0, 1], [2, 3]]), every, 4) is every


def test_default_int8_of_a_mixture_of_experts_quantizes_every_expert(tmp_path):
    archive = folder_zip("mixtral", "causal-lm", tmp_path)
    signature = read_hf_folder(archive, task="causal-lm").signature()
    assert signature["program_layers"] == []  # the experts' names are the program's: the worker checks patterns
    dataset = text_dataset(tmp_path, labels=False)
    result = run_folder_pipeline(archive, dataset, "causal-lm", [PTQSpec(calibration_samples=16)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    metrics = result.stages[0].metrics
    # 2 blocks x (4 attention projections + the router + 4 experts x 2 projections) + the output layer
    assert metrics["method_metrics"]["quantized_layers"] == 27
    assert metrics["compression_ratio"] > 3
    assert metrics["perplexity"] == pytest.approx(result.baseline["perplexity"], rel=0.02)
    # The folder's experts (dequantized by transformers) and router read float inputs: not what the W8A8 .pt2
    # computes, but exactly the stage's model with those inputs in float, so it is measured as its own model.
    folder = metrics["hf_folder"]
    assert folder["written"] and folder["relative_difference_to_stage_model_in_float"] <= 1e-3, folder
    assert len(folder["float_input_layers"]) == 18  # 2 blocks x (the router + 4 experts x 2 input projections)
    own = folder["measured_as_its_own_model"]
    assert own["metric"] == metrics["metric"] and own["metric_points"] >= metrics["metric_points"] - 0.1


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])  # Mixtral's checkpoint names its experts w1/w2/w3
def test_weight_only_experts_are_written_per_expert_and_load_as_the_stage_computes(tmp_path, model_type):
    """Quantized experts are written as the Hub's MoE checkpoints hold them (one pack-quantized linear layer per
    expert); transformers decompresses and stacks them when it loads the folder, which then computes exactly what
    the stage's program does. The router (its own forward) is written float, as its dequantized weights."""
    from safetensors import safe_open

    from compression.formats import hf_folder

    archive = folder_zip(model_type, "causal-lm", tmp_path)
    weights = {"bits": 4, "granularity": "per_group", "group_size": 32}
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=False), "causal-lm",
                                 [PTQSpec(calibration_samples=8, weights=weights, activations=None)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    written = result.stages[0].metrics["hf_folder"]
    assert written["written"] and written["relative_difference_to_stage_model"] < 1e-5, written
    assert written["dequantized_routers"] == ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
    path = next(a for a in result.stages[0].artifacts if a.kind == hf_folder.KIND).path
    model = hf_folder.load(path)
    experts = model.model.layers[0].mlp.experts
    assert experts.gate_up_proj.dim() == 3 and experts.gate_up_proj.dtype == torch.float32
    names = set()
    for shard in Path(str(path).removesuffix(".zip")).glob("*.safetensors"):  # unzipped there by load
        with safe_open(shard, "pt") as tensors:
            names.update(tensors.keys())
    per_expert = "block_sparse_moe.experts.3.w1" if model_type == "mixtral" else "mlp.experts.3.gate_proj"
    assert f"model.layers.1.{per_expert}.weight_packed" in names
    assert not [name for name in names if name.endswith(("experts.gate_up_proj", "experts.down_proj"))]


def test_a_pattern_naming_an_expert_layer_selects_it_and_a_typo_is_refused(tmp_path):
    archive = folder_zip("mixtral", "causal-lm", tmp_path)
    dataset = text_dataset(tmp_path, labels=False)

    def int8(exclude, work):
        return run_folder_pipeline(archive, dataset, "causal-lm",
                                   [PTQSpec(calibration_samples=8, exclude=exclude)],
                                   EvaluationSpec(latency=False), RunContext(), tmp_path / work)

    excluded = int8(["*.experts.gate_up_proj.1", "*.experts.down_proj.1"], "excluded")
    assert excluded.stages[0].metrics["method_metrics"]["quantized_layers"] == 27 - 2 * 2
    with pytest.raises(ValueError, match=r"match no layer"):
        int8(["*.experts.gate_up_proj.9"], "typo")


@pytest.mark.parametrize("model_type", ["mixtral", "gpt_oss"])  # GPT-OSS: transposed experts with biases
def test_split_tensors_stack_back_into_the_folders_tensors(model_type):
    model = tiny_model(model_type, "causal-lm")
    source = model.state_dict()
    projections = stacked_projections(model)
    split = split_source(source, projections)
    split_stacked_experts(model)  # the program's names and tensors
    assert {name: tensor.shape for name, tensor in split.items()} == \
        {name: tensor.shape for name, tensor in model.state_dict().items()}
    floats = dict(model.state_dict())
    restack(floats, set(), projections)
    assert floats.keys() == source.keys()
    assert all(torch.equal(floats[name], tensor) for name, tensor in source.items())
    with pytest.raises(StackedExpertsNotWritable, match="compressed-tensors cannot hold quantized"):
        restack(dict(model.state_dict()), {projections[0].layer(0)}, projections)
    uneven = dict(model.state_dict())
    first = f"{projections[0].layer(1)}.weight"
    uneven[first] = uneven[first][:-2]
    with pytest.raises(StackedExpertsNotWritable, match="pruned to different widths"):
        restack(uneven, set(), projections)


@pytest.mark.parametrize("model_type, reason", [
    ("gpt_oss", r"stored \[experts, in, out\] with biases"),
    ("granitemoe", r"saves the experts .* stacked \(model.layers.0.block_sparse_moe.input_linear.weight\)")])
def test_experts_a_checkpoint_stores_stacked_cannot_be_written_quantized(model_type, reason):
    model = tiny_model(model_type, "causal-lm")
    projections = stacked_projections(model)
    split = split_source(model.state_dict(), projections)
    fmt = WeightFormat(bits=8, group_size=None)
    weights = {}
    for expert in range(projections[0].experts):
        layer = projections[0].layer(expert)
        weight = split[f"{layer}.weight"]
        weights[layer] = QuantizedWeight(torch.zeros(weight.shape, dtype=torch.int8), torch.ones(len(weight), 1),
                                         None, fmt)
    with pytest.raises(StackedExpertsNotWritable, match=reason):
        checkpoint_experts(weights, projections, model)
    del weights[projections[0].layer(0)]
    if model_type == "granitemoe":
        with pytest.raises(StackedExpertsNotWritable, match="quantized 3 of the 4 experts"):
            checkpoint_experts(weights, projections, model)


def test_a_pruned_mixture_of_experts_is_written_as_a_folder_transformers_loads(tmp_path):
    from compression.formats import hf_folder

    archive = folder_zip("mixtral", "causal-lm", tmp_path)
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=False), "causal-lm",
                                 [PruneSpec(sparsity=0.5)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    written = result.stages[0].metrics["hf_folder"]
    assert written["written"] and written["relative_difference_to_stage_model"] < 1e-5, written
    model = hf_folder.load(next(a for a in result.stages[0].artifacts if a.kind == hf_folder.KIND).path)
    experts = model.model.layers[0].mlp.experts
    assert experts.gate_up_proj.dim() == 3  # stacked again, half of its weights pruned to zero
    assert (experts.gate_up_proj == 0).float().mean() == pytest.approx(0.5, abs=0.05)


def test_jetmoe_parallel_experts_split_into_linears_compute_the_same_and_export():
    # JetMoE keeps each projection's experts in one [experts, out, in] `weight`, called on the routed rows
    # grouped by expert: int8 PTQ quantized none of them (84 % of a classifier's weights stayed float, 1.13x).
    from compression.parallel_experts import split_parallel_experts

    torch.manual_seed(0)
    model = tiny_model("jetmoe", "causal-lm").eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = _Logits(model)(ids, mask)
    split = split_parallel_experts(model)
    # each block's MLP and its mixture of attention heads: input and output projections
    assert len(split) == 4 * model.config.num_hidden_layers
    assert not [name for name, parameter in model.named_parameters() if parameter.dim() == 3]
    assert isinstance(model.get_submodule(f"{split[0]}.experts.3"), torch.nn.Linear)
    with torch.no_grad():
        assert torch.allclose(_Logits(model)(ids, mask), expected, atol=1e-5)
        program = export_model(_Logits(model).eval(), (ids, mask))
        assert torch.allclose(program.module()(ids, mask), expected, atol=1e-5)


def test_jetmoe_experts_are_quantized_and_a_float_stage_is_stacked_back_into_its_folder(tmp_path):
    archive = folder_zip("jetmoe", "causal-lm", tmp_path)
    dataset = text_dataset(tmp_path, labels=False)
    int8, pruned = (run_folder_pipeline(archive, dataset, "causal-lm", [spec], EvaluationSpec(latency=False),
                                        RunContext(), tmp_path / name).stages[0].metrics
                    for name, spec in (("int8", PTQSpec(calibration_samples=16)), ("pruned", PruneSpec())))
    assert int8["compression_ratio"] > 3  # 1.13x while the experts stayed float
    # (a CPU without VNNI adds its saturation warning, which says nothing of the experts)
    warnings = [w for w in int8["method_metrics"].get("warnings", []) if w != SATURATION_WARNING]
    assert not warnings, warnings
    # the checkpoint holds the experts stacked: no per-expert layer of it can hold them quantized
    assert "saves the experts of 'model.layers.0.mlp.input_linear.weight' stacked" in int8["hf_folder"]["reason"]
    assert pruned["hf_folder"]["written"] and pruned["hf_folder"]["relative_difference_to_stage_model"] < 1e-5
