import dataclasses

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from compression.context import RunContext
from compression.data import Dataset
from compression.onnx_export import export_onnx_qdq
from compression.ptq.int8_kernels import full_range_activations_saturate
from compression.quant.general import apply_general_ptq
from compression.quant.graph import as_graph_module, find_layers, fold_batchnorm
from compression.quant.observers import make_observer
from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat
from compression.specs.ptq import PTQSpec, WeightQuantSpec
from compression.task import Task
from compression.zoo import tiny_transformer
from tests.compression.quant.conftest import tiny_cnn

# ONNX Runtime's uint8 x int8 kernels saturate full-range products on x86 CPUs without VNNI (int8_kernels.py), so
# there ONNX Runtime computes another function than the QDQ graph says. On such a CPU the comparisons use 7-bit
# weights, ONNX Runtime's own remedy (its `reduce_range`), which keeps every pair sum within int16.
SATURATING_CPU = full_range_activations_saturate()


@pytest.mark.parametrize("fmt", [WeightFormat(bits=8), WeightFormat(bits=6, granularity="per_tensor"),
                                 WeightFormat(bits=4, symmetric=False, granularity="per_group", group_size=16)],
                         ids=["int8-per-channel", "int6-per-tensor", "int4-asym-group16"])
def test_onnxruntime_runs_the_qdq_model_like_torch(tmp_path, fmt):
    if SATURATING_CPU and fmt.bits == 8:
        fmt = dataclasses.replace(fmt, bits=7)
    model = tiny_cnn()
    x = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    gm = as_graph_module(model, (x[:4],))
    fold_batchnorm(gm)
    layers = find_layers(gm)
    sim = QuantSimulation(gm, layers, {layer.name: make_observer("minmax", 8, False) for layer in layers})
    sim.calibrate([(x,)])
    config = {name: fmt for name in sim.layers}
    sim.configure(config)
    with torch.no_grad():
        expected = sim.gm(x).numpy()
        float_out = model(x).numpy()
    weights = {sim.layers[name].weight_attr: sim.quantized(name, fmt) for name in sim.layers}
    activations = {sim.layers[name].weight_attr: sim.input_quantizers[name].qparams for name in sim.layers}
    for quantizer in sim.input_quantizers.values():
        quantizer.mode = "off"
    path = export_onnx_qdq(sim.gm, (x[:4],), tmp_path / "model.onnx", weights, activations)

    session = onnxruntime.InferenceSession(str(path))
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("DequantizeLinear") == 2 * len(layers) and ops.count("QuantizeLinear") == len(layers)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    # Same function up to float rounding (an activation on a rounding tie may land one step away).
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() < 0.02 * scale
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.95
    # and it is really quantized: it differs from the float model far more than from the simulation
    assert np.abs(got - expected).mean() < 0.2 * np.abs(got - float_out).mean()


def test_transformer_without_labels_exports_matmul_qdq(tmp_path):
    torch.manual_seed(0)
    model = tiny_transformer(vocab_size=50, max_length=8, dim=16, layers=1).eval()
    ids = np.random.default_rng(0).integers(0, 50, (192, 8))
    dataset = Dataset.from_arrays({"train.input_ids": ids[:128], "val.input_ids": ids[128:]}, ["input_ids"])
    task = Task(dataset, model, (torch.from_numpy(ids[:4]),), tmp_path)
    weights = WeightQuantSpec(bits=7 if SATURATING_CPU else 8)
    result = apply_general_ptq(PTQSpec(bias_correction=True, calibration_samples=128, weights=weights), model, task,
                               RunContext())

    assert result.metrics["metric_name"] == "top1_agreement" and result.metrics["quantized_metric"] > 90
    assert len(result.metrics["layers"]) == 5  # qkv, proj, two feed-forward, head
    onnx_path = next(a.path for a in result.artifacts if a.kind == "model.onnx")
    session = onnxruntime.InferenceSession(str(onnx_path))
    x = torch.from_numpy(ids[128:])
    with torch.no_grad():
        expected = result.model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() < 0.02 * np.abs(expected).max()


class _RunningMaximum(torch.nn.Module):
    """A linear layer and its outputs' running maximum (`cummax`, which torch.onnx cannot convert)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        return torch.cat([y, torch.cummax(y, dim=1).values], 1)


def test_a_model_onnx_cannot_export_keeps_its_stage_and_says_why(tmp_path):
    # The ONNX file is an extra: a Grounding DINO's weight-only stage failed on it, losing the stage's other files.
    torch.manual_seed(0)
    model = _RunningMaximum().eval()
    x = np.random.default_rng(0).normal(size=(96, 8)).astype(np.float32)
    dataset = Dataset.from_arrays({"train.x": x[:64], "val.x": x[64:]}, ["x"])
    task = Task(dataset, model, (torch.from_numpy(x[:4]),), tmp_path)
    result = apply_general_ptq(PTQSpec(activations=None, calibration_samples=64), model, task, RunContext())
    assert "model.onnx" not in {artifact.kind for artifact in result.artifacts}
    assert "packed.safetensors" in {artifact.kind for artifact in result.artifacts}
    assert any("the ONNX QDQ model (model.onnx) was not written" in warning for warning in result.metrics["warnings"])
