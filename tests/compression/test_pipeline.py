import json

import numpy as np
import pytest

from compression.context import RunContext
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PTQSpec


def test_ptq_pipeline_on_digits_reports_before_and_after(example_files, tmp_path):
    model_path, dataset_path = example_files  # the session's digits CNN (tests/conftest.py)
    events = []
    evaluation = EvaluationSpec(latency=True, latency_batch_sizes=[1, 4], compile=False)
    result = run_pipeline(model_path, dataset_path, [PTQSpec(calibration_samples=128)], evaluation,
                          RunContext(report=events.append), tmp_path)
    metrics = json.loads(json.dumps(result.to_metrics()))  # what the worker stores must survive JSON
    baseline, stage, final = metrics["baseline"], metrics["stages"][0], metrics["final"]
    assert baseline["accuracy"] > 0.93 and baseline["samples"] == 360
    assert baseline["size_bytes"] == model_path.stat().st_size and baseline["parameters"] > 10_000
    assert final == stage["metrics"] and stage["method"] == "ptq"
    assert final["accuracy"] >= baseline["accuracy"] - 0.02 and final["top1_agreement"] > 0.97
    artifact, = stage["artifacts"]
    assert artifact["kind"] == "model.pt2" and final["size_bytes"] == artifact["size_bytes"]
    assert final["compression_ratio"] == pytest.approx(baseline["size_bytes"] / artifact["size_bytes"])
    assert final["compression_ratio"] > 1.5  # not 4: on a model this small the graph description weighs a lot
    # the example was written by save_program, deflated like the stage's file: the two ratios are the same
    assert baseline["deflated_size_bytes"] == baseline["size_bytes"]
    assert final["compression_ratio_vs_deflated_upload"] == pytest.approx(final["compression_ratio"])
    # int8 weights are still counted; batch norm folded into the convs leaves a bias per channel instead
    assert final["parameters"] == pytest.approx(baseline["parameters"], rel=0.01)
    assert set(final["latency_ms"]) == {"1", "4"} == set(baseline["latency_ms"])
    assert baseline["latency_ms"] == final["reference_latency_ms"]  # the upload timed alongside the stage's model
    for batch, timing in final["latency"].items():
        assert timing["model"]["median_ms"] == final["latency_ms"][batch] and timing["model"]["rounds"] >= 5
        assert timing["reference"]["median_ms"] == final["reference_latency_ms"][batch]
    if final["latency_reliable"]:
        for batch, ms in final["latency_ms"].items():
            assert final["speedup"][batch] == pytest.approx(final["reference_latency_ms"][batch] / ms)
    else:  # a busy machine: the figures are kept but no speedup is presented
        assert "speedup" not in final and final["latency_unreliable"]
    assert final["method_metrics"]["calibration_samples"] == 128 and final["device"] == "cpu"
    stages = {e.stage for e in events}
    assert {"main", "0:ptq"} <= stages and any(e.phase == "calibrate" for e in events)


def test_pipeline_without_latency_and_without_labels_measures_fidelity(example_files, tmp_path):
    model_path, dataset_path = example_files
    with np.load(dataset_path) as archive:
        unlabelled = tmp_path / "unlabelled.npz"
        np.savez(unlabelled, **{k: archive[k] for k in archive.files if not k.endswith(".y")})
    result = run_pipeline(model_path, unlabelled, [PTQSpec(calibration_samples=64)],
                          EvaluationSpec(latency=False, max_samples=100), RunContext(), tmp_path / "out")
    assert "accuracy" not in result.baseline and result.baseline["top1_agreement"] == 1.0
    assert result.final["samples"] == 100 and result.final["top1_agreement"] > 0.95
    assert result.final["sqnr_db"] > 15 and "latency_ms" not in result.final
    assert result.stages[0].artifacts[0].path.parent == tmp_path / "out" / "0_ptq"


def test_an_uploaded_student_is_loaded_from_the_files_the_run_was_given(example_files, tmp_path):
    import torch

    from compression.examples import digits_dataset, train_digits_cnn
    from compression.io import export_model, save_program
    from compression.specs import KDSpec
    model_path, dataset_path = example_files
    arrays = digits_dataset()
    small = train_digits_cnn(steps=2, width=4, arrays=arrays)
    student_path = save_program(export_model(small, (torch.from_numpy(arrays["val.x"][:2]),)), tmp_path / "s.pt2")
    kd = KDSpec(student={"kind": "upload", "model_id": "mdl_student"}, training={"steps": 3, "batch_size": 16})
    evaluation = EvaluationSpec(latency=False, max_samples=50)
    result = run_pipeline(model_path, dataset_path, [kd], evaluation, RunContext(), tmp_path / "out",
                          uploaded_models={"mdl_student": student_path})
    student_parameters = sum(p.numel() for p in small.parameters())
    assert result.final["parameters"] == student_parameters < result.baseline["parameters"] / 4
    with pytest.raises(ValueError, match="mdl_other was not provided"):
        other = KDSpec(student={"kind": "upload", "model_id": "mdl_other"}, training={"steps": 3})
        run_pipeline(model_path, dataset_path, [other], evaluation, RunContext(), tmp_path / "out2",
                     uploaded_models={"mdl_student": student_path})


def test_a_collapsed_stage_warns_or_fails_the_budget_with_its_metrics_kept(example_files, tmp_path):
    from compression.quality import QualityBudgetExceeded
    from compression.specs import PruneSpec
    model_path, dataset_path = example_files
    collapse = PruneSpec(sparsity=0.97, recalibrate_batches=0)
    evaluation = EvaluationSpec(latency=False, max_samples=100)
    warned = run_pipeline(model_path, dataset_path, [collapse], evaluation, RunContext(), tmp_path / "warn")
    final = warned.final
    assert final["metric"] == "accuracy" and final["metric_drop"] > 20
    assert final["metric_drop"] == pytest.approx(warned.baseline["metric_points"] - final["metric_points"], abs=1e-3)
    assert "quality collapsed: accuracy" in final["warnings"][0]
    assert warned.to_metrics()["warnings"] == [f"stage 0 (prune): {final['warnings'][0]}"]

    measured = []
    budget = evaluation.model_copy(update={"max_metric_drop": 5.0})
    refusal = r"stage 0 \(prune\) dropped accuracy by .* evaluation.max_metric_drop = 5;"
    with pytest.raises(QualityBudgetExceeded, match=refusal):
        run_pipeline(model_path, dataset_path, [collapse], budget, RunContext(), tmp_path / "fail",
                     on_measured=measured.append)
    assert [len(m["stages"]) for m in measured] == [0, 1]
    assert measured[-1]["stages"][0]["metrics"]["metric_drop"] == pytest.approx(final["metric_drop"])


def test_ptq_extra_formats_are_written_checked_and_timed_beside_the_pt2(example_files, tmp_path):
    model_path, dataset_path = example_files
    evaluation = EvaluationSpec(latency_batch_sizes=[1, 4], compile=False)
    spec = PTQSpec(calibration_samples=64, extra_formats=["onnx_int8", "aoti"])
    result = run_pipeline(model_path, dataset_path, [spec], evaluation, RunContext(), tmp_path)
    final = json.loads(json.dumps(result.to_metrics()))["final"]
    artifacts = {a.name: a for a in result.stages[0].artifacts}
    assert {name: a.kind for name, a in artifacts.items()} == {
        "model_int8.pt2": "model.pt2", "model_int8.onnx": "model.onnx", "model_int8.aoti.pt2": "model.aoti.pt2"}
    assert final["model_artifact"] == "model_int8.pt2"  # the job's size and metric stay the .pt2's
    onnx, aoti = artifacts["model_int8.onnx"].metadata, artifacts["model_int8.aoti.pt2"].metadata
    # ONNX Runtime calibrates its own ranges: close to the .pt2, not equal; the package is the .pt2's own graph
    assert onnx["cosine_to_pt2"] > 0.98 and aoti["cosine_to_pt2"] > 0.9999
    assert aoti["batch_sizes"] == [1, 4] and "load_package" in aoti["recipe"] and onnx["build_time_s"] > 0
    assert set(final["artifact_latency_ms"]) == set(artifacts)
    for name, per_batch in final["artifact_latency_ms"].items():
        assert set(per_batch) == {"1", "4"} and all(ms > 0 for ms in per_batch.values())
        assert final["artifact_latency"][name]["1"]["rounds"] >= 5
    assert final["artifact_latency_ms"]["model_int8.pt2"] == final["latency_ms"]
    for batch in ("1", "4"):  # the fastest file where every figure is reliable, else why not
        fastest = final["fastest_artifact"].get(batch)
        if fastest is None:
            assert final["fastest_artifact_unreliable"][batch]
        else:
            assert final["artifact_latency_ms"][fastest][batch] == min(
                per_batch[batch] for per_batch in final["artifact_latency_ms"].values())
