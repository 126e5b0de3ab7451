"""Models stored in bfloat16 or float16, as most Hugging Face checkpoints are: every stage computes on a float32
copy, and a float model it outputs is stored in the upload's precision again (`compression.half_precision`)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.half_precision import HalfStorage, in_float32, stored_in
from compression.io import export_model, load_program, save_program
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs import (
    DifferentiableQuantizationSpec,
    EvaluationSpec,
    IPQSpec,
    KDSpec,
    PruneSpec,
    PTQSpec,
)
from compression.specs.distill import UploadedStudent, ZooStudent
from tests.compression.real_shapes import PitchCNN
from tests.hf_folders import CORPUS, bert_folder, jsonl_bytes, zip_bytes

FEW_STEPS = {"steps": 2, "batch_size": 8, "warmup_steps": 0}


class _CastsInside(nn.Module):
    """Half-precision weights, a softmax computed in float32 and cast back, a constant built in the model's dtype,
    and a buffer kept in float32 on purpose (as transformers keeps rotary frequencies)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.register_buffer("frequencies", torch.linspace(0.1, 1.0, 8))

    def forward(self, x):
        h = self.linear(x)
        h = torch.softmax(h.to(torch.float32) * self.frequencies, dim=-1).to(self.linear.weight.dtype)
        return h + torch.full((1,), 0.5, dtype=self.linear.weight.dtype)


def _half_cast_model(dtype):
    torch.manual_seed(0)
    model = _CastsInside().eval()
    model.linear.to(dtype)
    return model


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_widening_computes_in_float32_and_takes_the_same_inputs(dtype):
    model = _half_cast_model(dtype)
    x = torch.randn(4, 8).to(dtype)
    graph = export_model(model, (x,)).module()
    widened = in_float32(graph)
    float_model = _half_cast_model(dtype).float()
    float_model.linear.weight.data = model.linear.weight.float()
    float_model.linear.bias.data = model.linear.bias.float()
    out = widened(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, float_model(x.float()), rtol=0, atol=1e-6)
    assert graph.linear.weight.dtype == dtype, "the original graph is left as it was"
    traced = [value for node in widened.graph.nodes if node.op != "placeholder"
              for value in torch.utils._pytree.tree_leaves(node.meta.get("val")) if isinstance(value, torch.Tensor)]
    # The int8 quantizer reads these: a weight recorded as half precision was dequantized to it
    assert traced and all(value.dtype == torch.float32 for value in traced)


def test_a_float_output_is_stored_and_computes_in_the_uploads_precision(tmp_path):
    model = _half_cast_model(torch.bfloat16)
    x = torch.randn(4, 8).to(torch.bfloat16)
    graph = export_model(model, (x,)).module()
    storage = HalfStorage.of(graph)
    assert storage.dtype == torch.bfloat16 and storage.float32_names == {"frequencies"}
    widened = in_float32(graph)
    stored = stored_in(widened, storage, (x,))
    assert stored.linear.weight.dtype == torch.bfloat16
    assert stored.frequencies.dtype == torch.float32, "a tensor the upload keeps in float32 stays float32"
    assert not _weight_casts(stored), "the linear runs in bfloat16 as the upload's did, no weight widened per call"
    torch.testing.assert_close(stored(x), widened(x), rtol=0.01, atol=0.01)  # bfloat16 matmul, float32 softmax
    # narrowing was exact: the next stage widens it back to the same float32 model
    torch.testing.assert_close(in_float32(stored)(x), widened(x), rtol=0, atol=0)


class _NormThenLinear(nn.Module):
    """transformers' RMSNorm: computed in float32, cast back to the input's dtype before the half weight."""

    def __init__(self):
        super().__init__()
        self.norm_weight = nn.Parameter(torch.rand(8) + 0.5)
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.linear(self.norm_weight * h.to(x.dtype))


def test_an_op_that_meets_two_precisions_gets_a_cast_and_the_result_stays_close():
    torch.manual_seed(0)
    model = _NormThenLinear().eval().to(torch.bfloat16)
    x = torch.randn(4, 8).to(torch.bfloat16)
    graph = export_model(model, (x,)).module()
    widened = in_float32(graph)  # its `.to(x.dtype)` now casts to float32, so the linear would meet float32
    stored = stored_in(widened, HalfStorage.of(graph), (x,))
    assert stored.linear.weight.dtype == torch.bfloat16 and not _weight_casts(stored)
    out = stored(torch.randn(16, 8).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(stored(x).float(), widened(x), rtol=0.05, atol=0.05)


def test_where_half_precision_computes_too_far_off_the_weights_are_widened_where_read(monkeypatch):
    """The fallback: stored narrowed, computed in float32, exactly the stage's model."""
    import compression.half_precision as half_precision

    monkeypatch.setattr(half_precision, "HALF_COMPUTE_GAP", -1.0)
    model = _half_cast_model(torch.bfloat16)
    x = torch.randn(4, 8).to(torch.bfloat16)
    graph = export_model(model, (x,)).module()
    widened = in_float32(graph)
    stored = stored_in(widened, HalfStorage.of(graph), (x,))
    assert stored.linear.weight.dtype == torch.bfloat16 and len(_weight_casts(stored)) == 2
    torch.testing.assert_close(stored(x), widened(x), rtol=0, atol=0)
    again = in_float32(stored)
    assert not _weight_casts(again), "the next stage sees the weights themselves"
    torch.testing.assert_close(again(x), widened(x), rtol=0, atol=0)


def _weight_casts(module: torch.fx.GraphModule) -> list:
    return [n for n in module.graph.nodes if n.target is torch.ops.aten._to_copy.default
            and n.args[0].op == "get_attr"]


def _half_cnn_job(tmp_path, dtype, stages):
    torch.manual_seed(0)
    model = PitchCNN().eval().to(dtype)
    x = torch.randn(64, 256)
    save_program(export_model(model, (x[:2].to(dtype),)), tmp_path / "m.pt2")
    np.savez(tmp_path / "d.npz", **{"train.x": x[:48].numpy(), "val.x": x[48:].numpy()})
    return run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", stages, EvaluationSpec(latency=False),
                        RunContext(), tmp_path / "work")


@pytest.mark.parametrize("spec", [
    IPQSpec(centroids=16, kmeans_iterations=2, training=FEW_STEPS, min_weights=0),
    PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 16}, activations=None, export_onnx=False),
    DifferentiableQuantizationSpec(training=FEW_STEPS),
], ids=["ipq", "weight-only int4", "differentiable_quantization"])
def test_a_bfloat16_program_gets_the_quantizing_methods(tmp_path, spec):
    """Each failed on a bfloat16 upload with a dtype mismatch (a float32 weight meeting a bfloat16 input)."""
    stage = _half_cnn_job(tmp_path, torch.bfloat16, [spec]).stages[0]
    assert stage.metrics["metric_points"] > 90


def test_a_zoo_student_of_a_bfloat16_program_takes_its_inputs_and_is_stored_in_bfloat16(tmp_path):
    """The zoo builds float32 students: one failed in the dry run on the upload's bfloat16 inputs."""
    spec = KDSpec(student=ZooStudent(architecture="mlp"), training=FEW_STEPS)
    stage = _half_cnn_job(tmp_path, torch.bfloat16, [spec]).stages[0]
    download = load_program(next(a.path for a in stage.artifacts if a.path.suffix == ".pt2"))
    weights = {tensor.dtype for tensor in download.state_dict.values() if tensor.is_floating_point()}
    assert weights == {torch.bfloat16}, weights
    download.module()(torch.randn(3, 256).to(torch.bfloat16))


def test_a_pruned_float16_program_is_stored_in_float16_and_measured_as_downloaded(tmp_path):
    result = _half_cnn_job(tmp_path, torch.float16, [PruneSpec(sparsity=0.5), PTQSpec(calibration_samples=16)])
    pruned, quantized = result.stages
    download = load_program(next(a.path for a in pruned.artifacts if a.name == "pruned.pt2"))
    weights = {name: tensor.dtype for name, tensor in download.state_dict.items() if tensor.is_floating_point()}
    assert set(weights.values()) == {torch.float16}, weights
    assert pruned.metrics["compression_ratio"] > 1, "stored in float16, not widened to twice the upload's bytes"
    x = torch.randn(4, 256).to(torch.float16)
    torch.testing.assert_close(download.module()(x), pruned.model(x), rtol=0, atol=0)
    assert quantized.metrics["method_metrics"]["quantized_layers"] == 5, "the int8 stage after it sees its weights"


def _half_bert_job(tmp_path, dtype, stages, classes=None):
    folder = bert_folder(tmp_path / "bert", classes, dtype=dtype)
    (tmp_path / "m.zip").write_bytes(zip_bytes(folder))
    labels = {"train": [i % 3 for i in range(48)], "val": [i % 3 for i in range(48, len(CORPUS))]} \
        if classes else None
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:48], "val": CORPUS[48:]}, labels))
    task = "sequence-classification" if classes else "feature-extraction"
    return run_folder_pipeline(tmp_path / "m.zip", tmp_path / "d.jsonl", task, stages,
                               EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def _folder_dtypes(stage, tmp_path) -> tuple[str, set[str]]:
    """The written folder's config dtype and the dtypes of its float tensors."""
    assert stage.metrics["hf_folder"]["written"], stage.metrics["hf_folder"]
    archive = next(a.path for a in stage.artifacts if a.kind == "model.hf_folder")
    dtypes = set()
    with zipfile.ZipFile(archive) as folder:
        config = json.loads(folder.read("config.json"))
        for name in folder.namelist():
            if name.endswith(".safetensors"):
                data = folder.read(name)
                header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
                dtypes |= {entry["dtype"] for key, entry in header.items()
                           if key != "__metadata__" and entry["dtype"].startswith(("F", "BF"))}
    return config.get("dtype"), dtypes


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_folder_gets_int8_and_a_float32_folder_that_loads(tmp_path, dtype):
    """Failed before: an int8 embedding's float32 rows met a half-precision layer norm."""
    stage = _half_bert_job(tmp_path, dtype, [PTQSpec(calibration_samples=16)]).stages[0]
    assert stage.metrics["method_metrics"]["quantized_layers"] > 0
    assert stage.metrics["metric_points"] > 90  # cosine to the upload's embeddings
    config_dtype, float_dtypes = _folder_dtypes(stage, tmp_path)
    assert config_dtype == "float32" and float_dtypes == {"F32"}, (config_dtype, float_dtypes)


def test_a_float16_folder_trains_in_float32_and_its_pruned_folder_stays_float16(tmp_path):
    """Training float16 weights overflowed (the loss became nan at step 2)."""
    spec = PruneSpec(sparsity=0.5, finetune={"steps": 4, "batch_size": 8})
    stage = _half_bert_job(tmp_path, "float16", [spec]).stages[0]
    finetune = stage.metrics["method_metrics"]["finetune"]
    assert finetune["steps"] == 4 and np.isfinite(finetune["final_loss"])
    config_dtype, float_dtypes = _folder_dtypes(stage, tmp_path)
    assert config_dtype == "float16" and float_dtypes == {"F16"}, (config_dtype, float_dtypes)


class _TokenClassifier(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.embedding = nn.Embedding(50, width)
        self.head = nn.Linear(width, 4)

    def forward(self, ids):
        return self.head(self.embedding(ids).mean(1))


def test_a_float32_student_distils_a_bfloat16_model_of_token_ids(tmp_path):
    """The stages compute in float32, so a student trained and uploaded in float32 fits a bfloat16 model (the
    submission check allows its float32 outputs)."""
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (64, 12))
    teacher = _TokenClassifier(32).eval().to(torch.bfloat16)
    save_program(export_model(teacher, (ids[:2],)), tmp_path / "m.pt2")
    save_program(export_model(_TokenClassifier(8).eval(), (ids[:2],)), tmp_path / "student.pt2")
    np.savez(tmp_path / "d.npz", **{"train.ids": ids[:48].numpy(), "val.ids": ids[48:].numpy()})
    spec = KDSpec(student=UploadedStudent(model_id="mdl_student"), training=FEW_STEPS)
    stage = run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", [spec], EvaluationSpec(latency=False),
                         RunContext(), tmp_path / "work", uploaded_models={"mdl_student": tmp_path / "student.pt2"}
                         ).stages[0]
    assert stage.metrics["method_metrics"]["train"]["steps"] == 2
    assert np.isfinite(stage.metrics["metric_points"])


def test_a_layers_student_of_a_float16_folder_trains_in_float32(tmp_path):
    """The student built from the folder came in float16 and trained so: a Llama classifier's loss was nan at
    step 2 (bench.hf_architecture_sweep --dtype float16)."""
    from bench.hf_architecture_sweep import ENCODER_METHODS, folder_zip, text_dataset

    archive = folder_zip("llama", "sequence-classification", tmp_path, "float16")
    result = run_folder_pipeline(archive, text_dataset(tmp_path, labels=True), "sequence-classification",
                                 [ENCODER_METHODS["kd_layers"]], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    stage = result.stages[0]
    assert np.isfinite(stage.metrics["method_metrics"]["train"]["final_loss"])
    config_dtype, float_dtypes = _folder_dtypes(stage, tmp_path)
    assert config_dtype == "float16" and "F16" in float_dtypes, (config_dtype, float_dtypes)


def test_a_float64_program_is_quantized_and_its_pruned_result_stays_float64(tmp_path):
    """int8 PTQ failed on a double upload ("Expecting input to have dtype torch.float32"), iPQ on a double/float
    matmul: stages compute on a float32 copy, as for half precision."""
    pruned, quantized = _half_cnn_job(tmp_path / "int8", torch.float64,
                                      [PruneSpec(sparsity=0.5), PTQSpec(calibration_samples=16)]).stages
    download = load_program(next(a.path for a in pruned.artifacts if a.name == "pruned.pt2"))
    assert {t.dtype for t in download.state_dict.values() if t.is_floating_point()} == {torch.float64}
    assert quantized.metrics["method_metrics"]["quantized_layers"] == 5 and quantized.metrics["metric_points"] > 90
    spec = IPQSpec(centroids=16, kmeans_iterations=2, training=FEW_STEPS, min_weights=0)
    assert _half_cnn_job(tmp_path / "ipq", torch.float64, [spec]).stages[0].metrics["compression_ratio"] > 4
