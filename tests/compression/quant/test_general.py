import torch
from torch import nn

from compression.context import RunContext
from compression.quant.evaluate import Evaluator
from compression.quant.general import apply_general_ptq
from compression.specs.ptq import ActivationQuantSpec, PTQSpec, WeightQuantSpec
from tests.compression.quant.conftest import make_task


def test_w4a8_end_to_end_reports_layers_and_writes_deployables(cnn_task):
    model, task = cnn_task
    spec = PTQSpec(weights=WeightQuantSpec(bits=4), activations=ActivationQuantSpec(observer="percentile"),
                   bias_correction=True, sensitivity=True, calibration_samples=128, selection_samples=256)
    events = []
    result = apply_general_ptq(spec, model, task, RunContext(report=events.append))

    metrics = result.metrics
    assert metrics["metric_name"] == "accuracy" and metrics["float_metric"] == 100.0
    assert metrics["quantized_metric"] > 70.0
    layers = {row["name"]: row for row in metrics["layers"]}
    assert set(layers) == {"conv1", "conv2", "fc"}
    assert all(row["bits"] == 4 and row["weight_sqnr_db"] > 12 and row["output_sqnr_db"] > 5
               for row in layers.values())
    sensitivities = [row["sensitivity"] for row in metrics["layers"]]
    assert sensitivities == sorted(sensitivities, reverse=True)
    assert {event.phase for event in events} >= {"calibrate", "sensitivity", "export"}

    kinds = {artifact.kind: artifact for artifact in result.artifacts}
    assert set(kinds) == {"packed.safetensors", "model.onnx"}
    for artifact in result.artifacts:
        assert artifact.path.parent == task.workdir
        assert artifact.metadata["size_bytes"] == artifact.path.stat().st_size
    # The returned model is the packed file's model, and it scores what the metrics say.
    evaluate = Evaluator(task.dataset, task.eval_split, spec.selection_samples, task.reference)
    assert abs(evaluate(result.model) - metrics["quantized_metric"]) < 0.01


def test_weight_only_fp8_skips_onnx_and_stays_accurate(cnn_task):
    model, task = cnn_task
    spec = PTQSpec(weights=WeightQuantSpec(dtype="fp8_e4m3"), activations=None, exclude=["fc"])
    result = apply_general_ptq(spec, model, task, RunContext())
    assert [artifact.kind for artifact in result.artifacts] == ["packed.safetensors"]
    assert result.metrics["quantized_metric"] > 95.0
    assert {row["name"]: row["format"] for row in result.metrics["layers"]} == {"conv1": "fp8_e4m3",
                                                                                 "conv2": "fp8_e4m3"}


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.sensitive = nn.Linear(32, 64)
        self.robust = nn.Linear(64, 8)
        with torch.no_grad():
            self.sensitive.weight.copy_(torch.randn(64, 32, generator=generator) * 0.2)
            self.sensitive.weight[:, 0] *= 30  # one outlier input column wrecks a 2-bit grid for every row
            # values on the 2-bit symmetric grid {-2, -1, 0, 1} * 0.5 (after scaling by max|w| = 1): exact at 2 bits
            self.robust.weight.copy_(torch.randint(-1, 2, (8, 64), generator=generator).float() * 0.5)
            self.robust.weight[:, 0] = 0.5

    def forward(self, x):
        return self.robust(torch.relu(self.sensitive(x)))


def test_budget_keeps_the_sensitive_layer_at_8_bits(tmp_path):
    model = TwoLayer().eval()
    task = make_task(model, (32,), tmp_path, samples=512)
    spec = PTQSpec(weights=WeightQuantSpec(bits=2), activations=None, max_metric_drop=2.0, export_onnx=False)
    result = apply_general_ptq(spec, model, task, RunContext())
    budget = result.metrics["budget"]
    assert budget["steps"][0]["metric"] < 90.0  # everything at 2 bits breaks the budget...
    assert budget["met"] and budget["drop"] <= 2.0
    assert budget["chosen"] == {"sensitive": "int8 sym per_channel", "robust": "int2 sym per_channel"}
    rows = result.metrics["layers"]
    assert rows[0]["name"] == "sensitive" and rows[0]["sensitivity"] > rows[1]["sensitivity"]


def test_spec_defaults_are_the_x86_int8_recipe():
    assert PTQSpec().is_x86_int8_default
    assert PTQSpec(calibration_samples=64).is_x86_int8_default
    assert not PTQSpec(weights=WeightQuantSpec(bits=4)).is_x86_int8_default
    assert not PTQSpec(activations=ActivationQuantSpec(observer="kl")).is_x86_int8_default
    assert not PTQSpec(max_metric_drop=1.0).is_x86_int8_default


def test_a_budget_that_cannot_be_met_ends_with_a_warning(tmp_path):
    model = TwoLayer().eval()
    task = make_task(model, (32,), tmp_path, samples=512)
    spec = PTQSpec(weights=WeightQuantSpec(bits=2), activations=ActivationQuantSpec(bits=2), max_metric_drop=0.0,
                   budget_allows_float=False, export_onnx=False)
    result = apply_general_ptq(spec, model, task, RunContext())
    assert not result.metrics["budget"]["met"]
    warning, = result.metrics["warnings"]
    assert "max_metric_drop = 0 was not met" in warning and "budget_allows_float" in warning
