import copy
import zipfile

import pytest
import torch

from compression import zoo
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.examples import digits_dataset, train_digits_cnn
from compression.io import export_model, load_model
from compression.modes import eval_mode, train_mode
from compression.qat import apply_qat
from compression.qat.apply import train_qat
from compression.qat.prepare import calibrate, freeze_batchnorm, layer_summary, materialize, prepare_qat
from compression.quant.packed import load_packed
from compression.specs.qat import QATSpec
from compression.specs.training import TrainingSpec
from compression.task import Task


@pytest.fixture(scope="module")
def digits():
    arrays = digits_dataset()
    dataset = Dataset.from_arrays(arrays, ["x"])
    example = (torch.from_numpy(arrays["val.x"][:4]),)
    # Exported once here (as uploads are): each stage then copies the graph instead of exporting again.
    model = export_model(train_digits_cnn(300, arrays=arrays), example).module()
    return dataset, model, example


def rounded_accuracy(model, dataset, example, bits):
    """Plain rounding of the trained model: min-max weights and calibrated activations, no training."""
    gm, layers = prepare_qat(model, example, weight_bits=bits, activation_bits=bits, weight_quantizer="ste",
                             activation_quantizer="ste", first_last_bits=None)
    eval_mode(gm)
    calibrate(gm, layers, [batch.inputs for batch in dataset.split("train").batches(256, limit=256)])
    return evaluate(gm, dataset.split("val"))["accuracy"]


@pytest.mark.parametrize("quantizer, weight_bits, activation_bits", [("lsq", 4, 4), ("sawb", 2, 4)])
def test_qat_recovers_accuracy_that_rounding_loses(digits, tmp_path, quantizer, weight_bits, activation_bits):
    dataset, model, example = digits
    float_accuracy = evaluate(model, dataset.split("val"))["accuracy"]
    rounded = rounded_accuracy(model, dataset, example, weight_bits)
    spec = QATSpec(quantizer=quantizer, weight_bits=weight_bits, activation_bits=activation_bits,
                   first_last_bits=None, freeze_bn_after=100,
                   training=TrainingSpec(steps=150, batch_size=64, lr=1e-3, warmup_steps=10))
    task = Task(dataset, model, example, tmp_path)
    result = apply_qat(spec, model, task, RunContext())
    accuracy = result.metrics["after"]["accuracy"]
    assert accuracy > rounded
    assert accuracy >= float_accuracy - (0.015 if weight_bits == 4 else 0.04)
    if weight_bits == 2:
        assert rounded < float_accuracy - 0.05  # 2-bit rounding really hurts; QAT wins most of it back

    # The returned model carries quantized weights: at most 2^bits distinct values per output channel.
    conv = dict(result.model.named_parameters())["4.weight"]
    assert max(len(channel.unique()) for channel in conv) <= 2**weight_bits
    # Both artifacts are the evaluated model.
    artifacts = {artifact.kind: artifact for artifact in result.artifacts}
    inputs = torch.from_numpy(dataset.split("val").inputs["x"][:64])
    expected = result.model(inputs)
    assert torch.allclose(load_model(artifacts["model.pt2"].path)(inputs), expected, atol=1e-5)
    packed = artifacts["packed.safetensors"]
    assert torch.allclose(load_packed(packed.path)(inputs), expected, atol=1e-5)
    # Against the .pt2's members as stored (fp32 weights): its zip deflates the few distinct fake-quantized values.
    with zipfile.ZipFile(artifacts["model.pt2"].path) as pt2:
        assert packed.size_bytes < sum(info.file_size for info in pt2.infolist()) / 4
    layers = result.metrics["layers"]
    assert layers["0"]["input"]["quantizer"] == "lsq"  # the image input is signed: no PACT there
    assert layers["4"]["input"]["quantizer"] == ("pact" if quantizer == "sawb" else "lsq")
    assert result.metrics["pact_fallback_to_lsq"] == (["0"] if quantizer == "sawb" else [])


def test_frozen_batchnorm_stops_updating_statistics(digits):
    dataset, model, example = digits
    gm = copy.deepcopy(model)
    train_mode(gm)
    batch = torch.from_numpy(dataset.split("train").inputs["x"][:32]) * 2 + 1
    running_mean = dict(gm.named_buffers())["1.running_mean"]
    before = running_mean.clone()
    gm(batch)
    assert not torch.equal(running_mean, before)
    assert freeze_batchnorm(gm) and not freeze_batchnorm(gm)  # the second call has nothing left to freeze
    frozen = running_mean.clone()
    gm(batch)
    assert torch.equal(running_mean, frozen)


def test_qat_resumes_after_cancellation_to_the_same_model(digits, tmp_path):
    dataset, _, example = digits
    torch.manual_seed(0)
    # An MLP: no batch norm or dropout, so no slow graph rewrite for train/eval mode; the point is the state.
    model = export_model(zoo.build("mlp", input_shape=(1, 8, 8), hidden=(32,)), example).module()
    spec = QATSpec(quantizer="pact", weight_bits=4, activation_bits=4,
                   training=TrainingSpec(steps=10, batch_size=32, lr=1e-3, checkpoint_every=4))
    task = Task(dataset, model, example, tmp_path)
    uninterrupted = train_qat(spec, model, task, RunContext()).model

    store, steps = {}, []
    stop_after_7 = lambda: "time limit" if len(steps) >= 7 else None
    record = lambda event: steps.append(event.step) if event.phase == "train" else None
    with pytest.raises(Exception, match="time limit"):
        train_qat(spec, model, task, RunContext(report=record, should_stop=stop_after_7,
                                                save_checkpoint=store.__setitem__, load_checkpoint=store.get))
    resumed = train_qat(spec, model, task, RunContext(save_checkpoint=store.__setitem__, load_checkpoint=store.get))
    assert resumed.report.resumed_from_step == 7
    expected_state, resumed_state = uninterrupted.state_dict(), resumed.model.state_dict()
    assert expected_state.keys() == resumed_state.keys()
    assert any(name.endswith(".alpha") for name in expected_state)  # learned clips are part of the comparison
    for name, expected in expected_state.items():
        assert torch.equal(expected, resumed_state[name]), name


def test_weights_only_qat_and_no_second_qat_on_top(digits, tmp_path):
    dataset, _, example = digits
    torch.manual_seed(0)
    model = export_model(zoo.build("mlp", input_shape=(1, 8, 8), hidden=(32,)), example).module()
    spec = QATSpec(quantizer="sawb", weight_bits=3, activation_bits=None, first_last_bits=None,
                   training=TrainingSpec(steps=3, batch_size=32))
    trained = train_qat(spec, model, Task(dataset, model, example, tmp_path), RunContext())
    summary = layer_summary(trained.model, trained.layers)
    assert all("input" not in entry and entry["weight"]["quantizer"] == "sawb" for entry in summary.values())
    with pytest.raises(ValueError, match="already went through QAT"):
        prepare_qat(trained.model, example, weight_bits=4, activation_bits=8, weight_quantizer="lsq",
                    activation_quantizer="lsq")
    quantized = materialize(trained.model, trained.layers)
    for attr, weight in quantized.items():
        parameter = dict(trained.model.named_parameters())[attr]
        assert torch.equal(parameter, weight.dequantized)
        assert max(len(row.unique()) for row in parameter) <= 2**3 - 1  # narrow signed grid: codes -3..3
        assert int(weight.codes.abs().max()) <= 3
