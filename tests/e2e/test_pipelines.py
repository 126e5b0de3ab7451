"""Jobs that chain methods, through HTTP and a real worker: every stage's output feeds the next, every stage's
metrics and artifacts are kept."""

import pytest

# How methods chain does not depend on the database or broker (test_service.py runs jobs on both): once is
# enough.
pytestmark = [pytest.mark.e2e, pytest.mark.one_backend]

# A short run needs a larger step than iPQ's own default lr (1e-4, for long finetunes), which a partial
# `training` object now keeps unless it names lr.
SHORT = {"steps": 30, "batch_size": 32, "checkpoint_every": 1000, "lr": 1e-3}


def _run(client, uploads, stages) -> dict:
    job = client.submit_job({"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
                             "stages": stages, "evaluation": {"latency": False}})
    job = client.wait(job["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_prune_then_distil_back_then_int8(client, uploads):
    job = _run(client, uploads, [
        {"method": "prune", "sparsity": 0.5, "criterion": "lamp"},
        {"method": "kd", "student": {"kind": "input"}, "training": SHORT},
        {"method": "ptq", "calibration_samples": 128},
    ])
    stages = job["metrics"]["stages"]
    assert [s["method"] for s in stages] == ["prune", "kd", "ptq"]
    assert all(s["metrics"]["accuracy"] > 0.85 for s in stages)
    artifacts = client.artifacts(job["id"])
    assert {a["stage_index"] for a in artifacts} == {0, 1, 2}
    assert any(a["stage_index"] == 0 and a["kind"].startswith("sparse") for a in artifacts)


def test_quant_noise_then_ipq_with_int8_centroids(client, uploads):
    job = _run(client, uploads, [
        {"method": "quant_noise", "training": SHORT},
        {"method": "ipq", "centroids": 16, "centroid_dtype": "int8", "num_groups": 2, "training": SHORT,
         "min_weights": 256},
    ])
    final = job["metrics"]["final"]
    assert final["compression_ratio"] > 4 and final["accuracy"] > 0.8
    packed = [a for a in client.artifacts(job["id"]) if a["stage_index"] == 1]
    assert packed and packed[0]["size_bytes"] == final["size_bytes"]


def test_an_uploaded_student_is_distilled(client, uploads, example_files, tmp_path):
    import torch

    from compression.examples import digits_dataset, train_digits_cnn
    from compression.io import export_model, save_program
    arrays = digits_dataset()
    small = train_digits_cnn(steps=5, width=4, arrays=arrays)
    student_path = save_program(export_model(small, (torch.from_numpy(arrays["val.x"][:2]),)),
                                tmp_path / "student.pt2")
    student = client.upload_model(student_path)
    job = _run(client, uploads, [{"method": "kd", "student": {"kind": "upload", "model_id": student.id},
                                  "training": {**SHORT, "steps": 60, "lr": 3e-3}}])
    stage = job["metrics"]["stages"][0]["metrics"]
    assert stage["parameters"] < uploads["model"]["signature"]["parameter_count"] / 4
    assert stage["accuracy"] > 0.5


def test_a_collapsed_stage_fails_its_budget_and_the_job_keeps_its_metrics_and_warning(client, uploads):
    job = client.submit_job({"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
                             "stages": [{"method": "prune", "sparsity": 0.97, "recalibrate_batches": 0}],
                             "evaluation": {"latency": False, "max_metric_drop": 5}})
    job = client.wait(job["id"], timeout=600)
    assert (job["status"], job["error"]["code"]) == ("failed", "invalid_input"), job["error"]
    assert "stage 0 (prune) dropped accuracy by" in job["error"]["message"]
    stage = job["metrics"]["stages"][0]["metrics"]
    assert job["metrics"]["baseline"]["metric"] == "accuracy" and stage["metric_drop"] > 5
    assert job["warnings"] and job["warnings"][0].startswith("stage 0 (prune): quality collapsed: accuracy")


def test_a_stage_that_cannot_run_fails_the_job_in_its_dry_run_before_any_work(client, uploads):
    # Accepted at submission (the pattern names layers of the model), but excluding every layer leaves the channel
    # analysis nothing to prune: the job fails seconds in, before the baseline and the first stage's training.
    job = client.submit_job({"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
                             "stages": [{"method": "quant_noise", "training": SHORT},
                                        {"method": "prune", "kind": "structured", "sparsity": 0.5,
                                         "exclude": ["*"]}],
                             "evaluation": {"latency": False}})
    job = client.wait(job["id"], timeout=600)
    assert (job["status"], job["error"]["code"]) == ("failed", "invalid_input"), job["error"]
    assert job["error"]["message"].startswith("dry run: stage 1 (prune) cannot run on this model: no channel group "
                                              "can be pruned at sparsity 0.5"), job["error"]["message"]
    assert not (job.get("metrics") or {}).get("baseline")  # nothing was evaluated or trained
