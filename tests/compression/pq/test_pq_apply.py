import torch

from compression.context import RunContext
from compression.evaluate import evaluate
from compression.pq import apply_ipq, apply_quant_noise, load_ipq
from compression.specs.ipq import IPQSpec, QuantNoiseConfig, QuantNoiseSpec
from compression.specs.training import TrainingSpec

FAST_TRAINING = TrainingSpec(steps=40, batch_size=64, lr=1e-3, checkpoint_every=1000)


def test_ipq_int8_keeps_digits_accuracy_within_a_few_points(digits_task):
    model, task = digits_task
    events = []
    spec = IPQSpec(centroids=64, centroid_dtype="int8", num_groups=2, training=FAST_TRAINING,
                   quant_noise=QuantNoiseConfig(rate=0.1))
    result = apply_ipq(spec, model, task, RunContext(report=events.append))

    before, after = result.metrics["before"]["accuracy"], result.metrics["after"]["accuracy"]
    assert before > 0.9
    assert after >= before - 0.04
    artifact = result.artifacts[0]
    assert artifact.size_bytes == result.metrics["packed_bytes"]
    assert result.metrics["compression_ratio"] > 5
    assert result.metrics["weights_compression_ratio"] > 12
    # The returned model is the one in the file: loading it again gives the same accuracy.
    reloaded = evaluate(load_ipq(artifact.path), task.dataset.split("val"))["accuracy"]
    assert reloaded == after
    phases = {event.phase for event in events}
    assert {"quantize", "group1.train", "group2.train"} <= phases
    assert [group["steps"] for group in result.metrics["groups"]] == [40, 40]


def test_ipq_finetuning_recovers_accuracy_lost_to_quantization(digits_task):
    model, task = digits_task
    spec = IPQSpec(centroids=8, num_groups=1, distillation=None, training=FAST_TRAINING)
    group = apply_ipq(spec, model, task, RunContext()).metrics["groups"][0]
    # 8 centroids per layer lose accuracy; finetuning the centroids alone wins much of it back.
    assert group["quantized"]["accuracy"] < 0.95
    assert group["finetuned"]["accuracy"] > group["quantized"]["accuracy"] + 0.02


def test_quant_noise_stage_keeps_accuracy_and_returns_a_plain_model(digits_task):
    model, task = digits_task
    spec = QuantNoiseSpec(noise=QuantNoiseConfig(rate=0.1, kind="int8"), training=FAST_TRAINING)
    result = apply_quant_noise(spec, model, task, RunContext())
    assert result.metrics["after"]["accuracy"] >= result.metrics["before"]["accuracy"] - 0.03
    assert not any("parametrizations" in name for name, _ in result.model.named_parameters())
    assert len(result.metrics["noised_layers"]) == 5
    inputs = task.example_inputs[0]
    assert torch.equal(result.model(inputs), result.model(inputs))  # deterministic: no noise after training
