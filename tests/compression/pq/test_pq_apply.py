import torch

from compression.context import Cancelled, RunContext
from compression.evaluate import evaluate
from compression.pq import apply_ipq, apply_quant_noise, load_ipq
from compression.specs.ipq import IPQSpec, QuantNoiseConfig, QuantNoiseSpec
from compression.specs.training import TrainingSpec

FAST_TRAINING = TrainingSpec(steps=40, batch_size=64, lr=1e-3, checkpoint_every=1000)


def test_ipq_int8_with_int8_activations_keeps_digits_accuracy_within_a_few_points(digits_task):
    model, task = digits_task
    events = []
    spec = IPQSpec(centroids=64, centroid_dtype="int8", activation_bits=8, num_groups=2, training=FAST_TRAINING,
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


def test_cancelled_ipq_resumes_to_the_same_packed_model(plain_digits_task):
    model, task = plain_digits_task
    spec = IPQSpec(centroids=16, num_groups=2, distillation=None,
                   training=TrainingSpec(steps=8, batch_size=32, checkpoint_every=3))
    uninterrupted = apply_ipq(spec, model, task, RunContext()).model

    store, seen = {}, []

    def stop_once_in_group_two():
        return "cancelled" if len(seen) == 5 and not store.get("stopped") else None

    def report(event):
        if event.phase == "group2.train":
            seen.append(event.step)

    ctx = RunContext(report=report, should_stop=stop_once_in_group_two, save_checkpoint=store.__setitem__,
                     load_checkpoint=store.get)
    try:
        apply_ipq(spec, model, task, ctx)
        raise AssertionError("the run was not cancelled")
    except Cancelled:
        store["stopped"] = True
    assert {"group1.train", "group2.train"} <= set(store)
    resumed = apply_ipq(spec, model, task, ctx)
    assert resumed.metrics["groups"][1]["resumed_from_step"] == 5
    for (name, expected), (_, actual) in zip(uninterrupted.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(expected, actual), name


def test_rate_weight_reaches_kmeans_and_shrinks_the_coded_indices(digits_task):
    model, task = digits_task
    no_training = TrainingSpec(steps=1, batch_size=32, checkpoint_every=1000)
    results = {rate: apply_ipq(IPQSpec(centroids=64, num_groups=1, rate_weight=rate, training=no_training),
                               model, task, RunContext()).metrics for rate in (0.0, 0.3)}
    plain, constrained = results[0.0]["quantized_layers"], results[0.3]["quantized_layers"]
    assert plain.keys() == constrained.keys()
    # every layer's indices carry fewer bits, and the packed file is smaller for it
    assert all(constrained[name]["index_entropy_bits"] < plain[name]["index_entropy_bits"] for name in plain)
    assert results[0.3]["packed_bytes"] < results[0.0]["packed_bytes"]


class _RootWeights(torch.nn.Module):
    """A layer whose weight the root module holds itself (`F.linear(x, self.w)`), then an nn.Linear."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(64, 32) / 6)
        self.head = torch.nn.Linear(64, 8)

    def forward(self, x):
        return self.head(torch.relu(torch.nn.functional.linear(x, self.w)))


def test_a_weight_of_the_root_module_stays_full_precision_and_the_rest_is_quantized(tmp_path):
    """Failed before: the parametrization registered on the root graph module left the weight unreadable to every
    later copy ("'_CodeOnlyModule' object has no attribute 'w'")."""
    import numpy as np

    from compression.io import export_model, save_program
    from compression.pipeline import run_pipeline
    from compression.pq.quantize import ROOT_WEIGHT
    from compression.specs import EvaluationSpec

    torch.manual_seed(0)
    save_program(export_model(_RootWeights().eval(), (torch.randn(4, 32),)), tmp_path / "m.pt2")
    rows = np.random.default_rng(0).standard_normal((96, 32)).astype("float32")
    np.savez(tmp_path / "d.npz", **{"train.x": rows[:64], "val.x": rows[64:]})
    spec = IPQSpec(centroids=8, kmeans_iterations=2, min_weights=0, training=TrainingSpec(steps=2, batch_size=8,
                                                                                         warmup_steps=0))
    result = run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", [spec], EvaluationSpec(latency=False),
                          RunContext(), tmp_path / "work")
    metrics = result.final["method_metrics"]
    assert metrics["full_precision_layers"] == {"w": ROOT_WEIGHT}
    assert list(metrics["quantized_layers"]) == ["head.weight"]
