import zipfile

import numpy as np
import pytest
import torch

from compression import zoo
from compression.context import Cancelled, RunContext
from compression.data import Dataset
from compression.evaluate import evaluate, tensor_sqnr_db
from compression.io import input_names, load_model, load_program
from compression.ptq import apply_ptq, quantize_int8
from compression.ptq.int8_kernels import SATURATION_WARNING, full_range_activations_saturate
from compression.ptq.quantize import quantized_layer_count
from compression.specs.ptq import PTQSpec
from compression.task import Task


def _task(model_path, dataset_path, workdir):
    program = load_program(model_path)
    dataset = Dataset.load(dataset_path, input_names(program))
    return Task(dataset, load_model(model_path), dataset.split("val").head(4).inputs, workdir)


def _weight_bytes(path):
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist() if "/data/weights/weight_" in i.filename)


def test_int8_outputs_stay_close_to_fp32_on_a_random_cnn():
    torch.manual_seed(0)
    model = zoo.build("small_cnn", image_size=28, width=8)
    for module in model.modules():  # non-trivial batch norm, which prepare_pt2e folds into the conv
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(64, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
    quantized = quantize_int8(model, (x[:4],), [(x[i:i + 16],) for i in range(0, 64, 16)])
    assert tensor_sqnr_db(expected, quantized(x)) > 30
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)  # the original is left as it was


def test_ptq_stage_on_digits_keeps_accuracy_and_writes_a_small_reloadable_int8_program(example_files, tmp_path):
    fp32_path, dataset_path = example_files  # the session's digits CNN (tests/conftest.py)
    task = _task(fp32_path, dataset_path, tmp_path)
    events = []
    ctx = RunContext(report=events.append)
    result = apply_ptq(PTQSpec(calibration_samples=200), load_model(fp32_path), task, ctx)

    val = task.dataset.split("val")
    fp32_accuracy = evaluate(task.reference, val)["accuracy"]
    int8 = evaluate(result.model, val, reference=task.reference)
    assert fp32_accuracy > 0.93
    assert int8["accuracy"] >= fp32_accuracy - 0.015
    assert int8["top1_agreement"] > 0.97 and int8["sqnr_db"] > 20

    artifact, = result.artifacts
    assert artifact.kind == "model.pt2" and artifact.path.exists()
    # int8 weights and no fp32 copies; on a model this small the graph description is a large part of the file
    assert _weight_bytes(artifact.path) < 0.3 * _weight_bytes(fp32_path)
    assert artifact.size_bytes < 0.6 * fp32_path.stat().st_size
    reloaded = load_model(artifact.path)
    x = val.head(50).inputs
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*x), result.model(*x), rtol=0, atol=0)
        assert reloaded(x[0][:1]).shape == (1, 10)  # dynamic batch survives

    assert result.metrics["calibration_samples"] == 200 and result.metrics["quantized_layers"] == 4
    calibration = [e for e in events if e.phase == "calibrate"]
    assert calibration[-1].step == calibration[-1].total == 7  # ceil(200 / 32)


def test_ptq_on_an_unlabelled_plain_module_and_cancellation(tmp_path):
    torch.manual_seed(0)
    model = zoo.build("mlp", input_shape=16, hidden=(32,), num_classes=4)
    x = np.random.default_rng(0).normal(size=(96, 16)).astype(np.float32)
    dataset = Dataset.from_arrays({"train.x": x[:64], "val.x": x[64:]}, ["x"])
    task = Task(dataset, model, dataset.split("val").head(4).inputs, tmp_path)
    result = apply_ptq(PTQSpec(calibration_samples=64), model, task, RunContext())
    assert evaluate(result.model, dataset.split("val"), reference=model)["sqnr_db"] > 25

    assert result.metrics["activation_range"] == "0..255" and "0..255" in result.artifacts[0].metadata["activations"]
    # The warning is there exactly where this CPU's int8 kernels saturate full-range activations.
    assert (SATURATION_WARNING in result.metrics.get("warnings", [])) is full_range_activations_saturate()
    reduced = apply_ptq(PTQSpec(calibration_samples=64, reduce_range=True), model, task, RunContext())
    assert PTQSpec(reduce_range=True).is_x86_int8_default  # an option of the default recipe
    assert reduced.metrics["activation_range"] == "0..127" and SATURATION_WARNING not in reduced.metrics.get(
        "warnings", [])
    assert "0..127" in reduced.artifacts[0].metadata["activations"]
    assert evaluate(reduced.model, dataset.split("val"), reference=model)["sqnr_db"] > 20

    stop_after_first = RunContext(should_stop=lambda: "cancelled")
    with pytest.raises(Cancelled):
        apply_ptq(PTQSpec(calibration_samples=64), model, task, stop_after_first)


@pytest.mark.parametrize("name,kwargs,make", [
    ("resnet", {"width_mult": 0.25, "depth_mult": 0.5}, lambda n: torch.randn(n, 1, 28, 28)),
    ("tiny_transformer", {"vocab_size": 50, "max_length": 12, "dim": 16, "heads": 2, "layers": 1},
     lambda n: torch.randint(0, 50, (n, 12))),
])
def test_residual_and_attention_architectures_quantize(name, kwargs, make):
    torch.manual_seed(0)
    model = zoo.build(name, **kwargs)
    x = make(48)
    quantized = quantize_int8(model, (x[:4],), [(x[i:i + 16],) for i in range(0, 48, 16)])
    with torch.no_grad():
        assert tensor_sqnr_db(model(x), quantized(x)) > 30


class SharedReluBlock(torch.nn.Module):
    """One nn.ReLU object called twice, as in torchvision's ResNet BasicBlock."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(channels)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def test_a_module_called_twice_quantizes_after_a_pt2_round_trip(tmp_path):
    from compression.io import export_model, save_program
    model = SharedReluBlock().eval()
    x = torch.randn(16, 8, 6, 6)
    path = save_program(export_model(model, (x[:2],)), tmp_path / "shared_relu.pt2")
    quantized = quantize_int8(load_model(path), (x[:2],), [(x,)])
    assert tensor_sqnr_db(quantized(x), model(x)) > 25


def test_calibration_that_sees_infinite_activations_is_refused():
    from compression.errors import NonFiniteValues
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.fill_(1e30)  # finite weights and inputs, activations overflow float32
    x = torch.full((16, 4), 1e10)
    with pytest.raises(NonFiniteValues, match="non-finite activations"):
        quantize_int8(model, (x[:4],), [(x,)])


class _Conv1dPitchNet(torch.nn.Module):
    """PESTO-shaped: 1-D convs (15 taps with padding, 1x1), a residual, LeakyReLU, a long 1-output-channel conv."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.LayerNorm([1, 48])
        self.conv1 = torch.nn.Conv1d(1, 8, 15, padding=7)
        self.conv2 = torch.nn.Conv1d(8, 8, 15, padding=7)
        self.mix = torch.nn.Conv1d(8, 2, 1)
        self.head = torch.nn.Conv1d(1, 1, 48 + 24 - 1, padding=23, bias=False)

    def forward(self, x):
        x = torch.nn.functional.leaky_relu(self.conv1(self.norm(x)), 0.3)
        x = x + self.conv2(x)
        x = torch.nn.functional.leaky_relu(self.mix(x), 0.3).flatten(1)
        return torch.softmax(self.head(x[:, None]).squeeze(1), -1)


def test_a_conv1d_model_is_quantized_not_returned_unchanged(tmp_path):
    # issue 10: the x86 quantizer only knows conv2d, so a model of Conv1d layers came back with nothing quantized
    torch.manual_seed(0)
    model = _Conv1dPitchNet().eval()
    x = torch.randn(64, 1, 48)
    report = {}
    quantized = quantize_int8(model, (x[:4],), [(x[i:i + 16],) for i in range(0, 64, 16)], report=report)
    assert report["conv1d_as_conv2d"] == 4
    assert quantized_layer_count(quantized) == 4
    with torch.no_grad():
        expected = model(x)
    assert tensor_sqnr_db(expected, quantized(x)) > 20


def test_a_model_with_nothing_to_quantize_ends_with_a_warning(tmp_path):
    model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Tanh()).eval()
    x = torch.randn(32, 8)
    np.savez(tmp_path / "data.npz", **{"train.x": x.numpy(), "val.x": x.numpy()})
    dataset = Dataset.load(tmp_path / "data.npz", ["x"])
    task = Task(dataset, model, (x[:4],), tmp_path)
    result = apply_ptq(PTQSpec(), model, task, RunContext())
    assert result.metrics["quantized_layers"] == 0
    assert "no conv or linear layer was quantized" in result.metrics["warnings"][0]
