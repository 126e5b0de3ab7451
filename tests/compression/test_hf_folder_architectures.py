"""Default int8 PTQ folders of architectures whose graphs quantize more than Linear inputs (bench/
hf_architecture_sweep.py): the quantize/dequantize pairs compressed-tensors cannot hold (a GLU/GELU MLP's gate
product, a shared layer's input on a grid per call) run in float in the folder, which is kept only if it still
computes what the stage's model computes. Tiny random models, a few seconds each."""

import numpy as np
import pytest
import torch

from bench.hf_architecture_sweep import folder_zip, text_dataset
from compression import formats
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.fidelity import examples_moved
from compression.hf_folder_export import allowed_difference
from compression.hf_folder_graph import NotExpressible
from compression.hf_folder_variant import MAX_METRIC_LOSS_POINTS, measured_variant
from compression.hf_program import example_rows
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec


def _ptq_stage(tmp_path, model_type, task):
    archive = folder_zip(model_type, task, tmp_path)
    read_hf_folder(archive, task=task)
    dataset = text_dataset(tmp_path, labels=task == "sequence-classification")
    result = run_folder_pipeline(archive, dataset, task, [PTQSpec(calibration_samples=16)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    return result.stages[0]


def _loaded_folder(stage):
    found = [a for a in stage.artifacts if a.kind == "model.hf_folder"]
    assert len(found) == 1, stage.metrics["hf_folder"]
    return formats.load("model.hf_folder", found[0].path).eval()


def test_albert_shared_layer_is_written_once_with_int8_weights_and_float_inputs(tmp_path):
    stage = _ptq_stage(tmp_path, "albert", "feature-extraction")
    details = stage.metrics["hf_folder"]
    assert details["written"], details
    # 3 int8 embedding tables, the embedding projection and the one shared layer's 6 linears, each stored once
    # (2 calls, the same codes)
    assert details["quantized_modules"] == 10
    # only the embedding projection is called once: the shared layer's inputs have a grid per depth
    assert details["static_input_quantizers"] == 1
    # per depth: the shared layer's 4 input grids (q/k/v, dense, ffn, ffn_output) and its tanh-GELU's 2 products
    assert len(details["float_activations"]) == 12
    loaded = _loaded_folder(stage)
    shared = loaded.get_submodule("encoder.albert_layer_groups.0.albert_layers.0.ffn")
    assert shared.quantization_scheme.input_activations is None and shared.weight_scale.numel() == 128
    inputs = example_rows(tmp_path / "work" / "dataset.npz", "val")
    with torch.no_grad():
        got = loaded(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state
        expected = stage.model(*inputs)
    # the float inputs move the output by far less than the int8 compression itself (0.05 of the scale)
    assert float((got - expected).abs().max() / expected.abs().max()) < 0.25 * details[
        "stage_model_relative_difference_to_float"]


def test_modernbert_gated_mlp_product_runs_in_float_and_the_linears_keep_w8a8(tmp_path):
    stage = _ptq_stage(tmp_path, "modernbert", "feature-extraction")
    details = stage.metrics["hf_folder"]
    assert details["written"], details
    assert details["quantized_modules"] == 9  # the int8 embedding table and Wqkv, Wo, Wi, Wo of 2 layers
    assert details["static_input_quantizers"] == 8  # every linear keeps its W8A8 input quantizer
    assert len(details["float_activations"]) == 4  # the GELU-gated product's two inputs in each layer's MLP
    assert details["relative_difference_to_stage_model"] <= 1e-3


def test_a_llama_classifier_folder_with_its_gate_product_in_float_is_measured_as_its_own_model(tmp_path):
    """int8 PTQ quantizes both factors of the SwiGLU product, which a compressed-tensors folder runs in float: the
    folder moves every row (0.023 of the scale) and was refused before 2026-12-05. It is exactly the stage's model
    with those quantizers left out, so it is evaluated itself, on the job's split against the upload, and kept."""
    stage = _ptq_stage(tmp_path, "llama", "sequence-classification")
    details = stage.metrics["hf_folder"]
    assert details["written"], details
    assert len(details["float_activations"]) == 4  # the gate product's two factors in each of 2 layers
    assert details["relative_difference_to_stage_model"] > 1e-3
    assert details["relative_difference_to_stage_model_in_float"] <= 1e-3
    own = details["measured_as_its_own_model"]
    assert own["computes"] == "the stage's model with 4 activation quantizers in float"
    assert own["metric"] == stage.metrics["metric"] and own["stage_metric_points"] == stage.metrics["metric_points"]
    assert own["metric_points"] >= stage.metrics["metric_points"] - MAX_METRIC_LOSS_POINTS
    assert own["samples"] == 16  # the evaluation split's rows
    [artifact] = [a for a in stage.artifacts if a.kind == "model.hf_folder"]
    assert artifact.metadata["computes"] == own["computes"]  # what the download lists says which model it is
    # what the job measured it on: the loaded folder agrees with its measurement
    loaded = _loaded_folder(stage)
    inputs = example_rows(tmp_path / "work" / "dataset.npz", "val", rows=16)
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        labels = torch.from_numpy(arrays["val.y"])
    with torch.no_grad():
        logits = loaded(input_ids=inputs[0], attention_mask=inputs[1]).logits
        accuracy = float((logits.argmax(-1) == labels).float().mean())
    assert 100 * accuracy == pytest.approx(own["metric_points"])


def test_a_folder_that_scores_worse_than_the_stage_model_is_refused_with_both_figures():
    def measure(model):
        return {"metric": "accuracy", "metric_points": 80.0, "samples": 16}

    with pytest.raises(NotExpressible, match="scores 80 accuracy points against the stage model's 81"):
        measured_variant(torch.nn.Identity(), measure, {"metric_points": 81.0}, 4)
    kept = measured_variant(torch.nn.Identity(), measure, {"metric_points": 80.05}, 4)
    assert kept["metric_points"] == 80.0 and kept["stage_metric_points"] == 80.05
    # nothing to measure with (a caller that gives no evaluation): the folder is refused as before
    assert measured_variant(torch.nn.Identity(), None, {"metric_points": 81.0}, 4) is None
    assert measured_variant(torch.nn.Identity(), measure, {}, 4) is None


def test_falcon_linear_layers_with_their_own_forward_are_written_when_the_folder_computes_the_same(tmp_path):
    """FalconLinear computes `x @ W.T + b` in its own forward, which compressed-tensors replaces with a plain
    linear layer's: the same function, so the loaded folder matches the stage model and is kept (it was refused
    for having its own forward before the check could say so)."""
    stage = _ptq_stage(tmp_path, "falcon", "causal-lm")
    details = stage.metrics["hf_folder"]
    assert details["written"] and details["relative_difference_to_stage_model"] <= 1e-3, details
    # the int8 embedding table and 2 layers x (query_key_value, dense, dense_h_to_4h, dense_4h_to_h) + the output
    assert details["quantized_modules"] == 10 and details["static_input_quantizers"] == 9
    loaded = _loaded_folder(stage)
    assert type(loaded.transformer.h[0].mlp.dense_h_to_4h).__name__ == "FalconLinear"


def test_a_linear_layer_whose_own_forward_computes_something_else_keeps_no_folder_and_is_named(tmp_path):
    # I-BERT's QuantLinear reads its weight in its own forward: the int8 codes, which compressed-tensors decompresses
    # only in the forward it replaces.
    stage = _ptq_stage(tmp_path, "ibert", "feature-extraction")
    reason = stage.metrics["hf_folder"]["reason"]
    assert stage.metrics["hf_folder"]["written"] is False
    assert "cannot load and run the written compressed-tensors folder" in reason
    assert "is a QuantLinear, which computes its own forward" in reason, reason
    assert [a.kind for a in stage.artifacts] == ["model.pt2"]


def test_rounding_ties_in_a_few_examples_are_told_from_a_difference_in_every_example():
    def allowed(moved, left_out=False, folder_error=0.03):
        return allowed_difference(0.03, folder_error, pooled=False, quantizers_left_out=left_out,
                                  examples_moved=moved, examples=8)

    # a tie moves the example it lands in: with 7 of 8 examples identical, half the compression's error is allowed
    assert allowed(1) == pytest.approx(0.015)
    assert allowed(4) == pytest.approx(0.015)
    # every example moved, a quantizer left out, or a folder further from float than the stage: a quarter
    assert allowed(8) == allowed(5) == pytest.approx(0.0075)
    assert allowed(1, left_out=True) == pytest.approx(0.0075)
    assert allowed(1, folder_error=0.05) == pytest.approx(0.0075)
    # a pooled output averages the compression's own error out, so half is allowed however many examples moved
    assert allowed_difference(0.03, 0.03, pooled=True, quantizers_left_out=True, examples_moved=8,
                              examples=8) == pytest.approx(0.015)


def test_examples_moved_counts_the_rows_that_differ_beyond_the_tolerance():
    expected = torch.ones(4, 3, 5)
    got = expected.clone()
    got[2, 1, 4] += 0.01
    got[3, 0, 0] += 1e-6
    assert examples_moved(got, expected, 1e-3) == 1
    assert examples_moved(got, expected, 1e-7) == 2


def test_a_t5_encoder_int8_folder_is_written_where_only_rounding_ties_move_its_output(tmp_path):
    """The tiny T5's int8 folder differed from the stage's model by 0.0081 of the scale (0.25 of the int8 error
    allowed 0.0077) and was refused, though 7 of its 8 example sentences came out identical."""
    stage = _ptq_stage(tmp_path, "t5", "feature-extraction")
    details = stage.metrics["hf_folder"]
    assert details["written"], details
    moved, examples = map(int, details["examples_differing_from_stage_model"].split(" of "))
    assert moved <= examples // 2
    assert details["relative_difference_to_stage_model"] <= 0.5 * details["stage_model_relative_difference_to_float"]
    assert type(_loaded_folder(stage)).__name__ == "T5EncoderModel"


def _weight_only_int4_stage(tmp_path, model_type):
    archive = folder_zip(model_type, "feature-extraction", tmp_path)
    spec = PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32}, activations=None,
                   export_onnx=False)
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=False), "feature-extraction", [spec],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    return result.stages[0]


def test_quantized_convolutions_are_written_as_their_dequantized_weights_beside_the_int4_linears(tmp_path):
    """ConvBERT's span-based dynamic convolutions (a depthwise and a pointwise Conv1d per layer): compressed-tensors
    holds no convolution, and the whole folder was refused; they are a minority of its quantized weights."""
    stage = _weight_only_int4_stage(tmp_path, "convbert")
    details = stage.metrics["hf_folder"]
    assert details["written"] and details["relative_difference_to_stage_model"] == 0, details
    assert details["dequantized_convs"] == [f"encoder.layer.{i}.attention.self.key_conv_attn_layer.{kind}"
                                            for i in (0, 1) for kind in ("depthwise", "pointwise")]
    loaded = _loaded_folder(stage)
    assert loaded.get_submodule("encoder.layer.0.attention.self.query").weight_packed.dtype == torch.int32
    conv = loaded.get_submodule("encoder.layer.0.attention.self.key_conv_attn_layer.depthwise").weight
    # the stage's int4 grid: one scale per 9-tap row, every tap a multiple of it
    steps = conv.detach().reshape(conv.shape[0], -1)
    scale = steps.abs().amax(1, keepdim=True) / 7
    assert torch.allclose(steps / scale, (steps / scale).round(), atol=1e-3)


def test_a_folder_whose_quantized_weights_are_mostly_convolutions_is_refused():
    from compression.hf_folder_export import _keep_float
    from compression.hf_folder_graph import FolderLayout

    manifest = [{"shape": [64, 64, 1]}, {"shape": [64, 64, 1]}, {"shape": [100, 64]}]
    with pytest.raises(NotExpressible, match="2 of the quantized layers are convolutions .* hold 56% of the"):
        _keep_float(FolderLayout(), {"a": 4096, "b": 4096}, {}, manifest)
    layout = FolderLayout()
    _keep_float(layout, {"b": 4096}, {}, manifest)
    assert layout.dequantized_convs == ["b"]


def test_int8_convolutions_holding_most_of_the_quantized_weights_stay_unwritten():
    """int8 PTQ's convolutions are written as float weights only where they are a minority (a patch embedding);
    a CNN's would make a float folder, and the graph's refusal then names them."""
    from compression.hf_folder_graph import FolderLayout, _as_source_shape, _dequantized_convs
    from compression.llm.quantize import QuantizedWeight, WeightFormat

    layout = FolderLayout()
    layout.weights["fc"] = QuantizedWeight(torch.zeros(10, 100, dtype=torch.int8), torch.ones(10, 1), None,
                                           WeightFormat(bits=8, group_size=None, symmetric=True))
    consumed = set()
    # 1152 of 2152 quantized weights
    assert not _dequantized_convs(layout, {"a": ("conv", torch.ones(16, 8, 9), ["c", "s", "z"])}, consumed)
    assert layout.dequantized_convs == [] and not consumed and "conv.weight" not in layout.floats
    # 576 of 1576
    assert _dequantized_convs(layout, {"a": ("conv", torch.ones(8, 8, 9), ["c", "s", "z"])}, consumed)
    assert layout.dequantized_convs == ["conv"] and consumed == {"c", "s", "z"}
    # a Conv1d the int8 path ran as a 2-D convolution: its kernel's unit axis is dropped again
    assert _as_source_shape(torch.ones(16, 1, 1, 10), torch.ones(16, 1, 10)).shape == (16, 1, 10)
    assert _as_source_shape(torch.ones(16, 4, 3, 3), torch.ones(16, 4, 3, 3)).shape == (16, 4, 3, 3)
