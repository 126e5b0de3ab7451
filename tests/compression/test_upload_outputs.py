"""The upload's outputs are computed once per job, stored for the tenant's later jobs and used for fidelity instead
of running the upload again (compression.upload_outputs)."""

import numpy as np
import pytest

from compression.context import RunContext
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PTQSpec


@pytest.fixture
def unlabelled(example_files, tmp_path):
    model_path, dataset_path = example_files
    with np.load(dataset_path) as archive:
        path = tmp_path / "unlabelled.npz"
        np.savez(path, **{k: archive[k] for k in archive.files if not k.endswith(".y")})
    return model_path, path


def _run(model_path, dataset_path, workdir, outputs_file, known_baseline=None, evaluation=None):
    evaluation = evaluation or EvaluationSpec(latency=False, max_samples=100)
    return run_pipeline(model_path, dataset_path, [PTQSpec(calibration_samples=64)], evaluation, RunContext(),
                        workdir, known_baseline=known_baseline, upload_outputs_file=outputs_file)


def test_a_later_run_reads_the_stored_outputs_instead_of_running_the_upload(unlabelled, tmp_path):
    model_path, dataset_path = unlabelled
    outputs_file = tmp_path / "cache" / "outputs.npz"
    first = _run(model_path, dataset_path, tmp_path / "a", outputs_file)
    with np.load(outputs_file) as stored:  # 100 rows in batches of the evaluation's batch size (32)
        assert int(stored["batch_size"]) == 32
        assert [len(stored[f"batch_{i}"]) for i in range(4)] == [32, 32, 32, 4] and len(stored.files) == 5
    baseline = {k: v for k, v in first.baseline.items()}
    second = _run(model_path, dataset_path, tmp_path / "b", outputs_file, known_baseline=baseline)
    assert second.baseline["reused"] and second.final["top1_agreement"] == first.final["top1_agreement"]
    assert second.final["sqnr_db"] == pytest.approx(first.final["sqnr_db"])

    # What the file holds is what the stage is compared with: negated outputs make the int8 model disagree.
    with np.load(outputs_file) as stored:
        negated = {name: stored[name] if name == "batch_size" else -stored[name] for name in stored.files}
    np.savez(outputs_file, **negated)
    third = _run(model_path, dataset_path, tmp_path / "c", outputs_file, known_baseline=baseline)
    assert third.final["cosine"] == pytest.approx(-first.final["cosine"], abs=1e-4)
    assert third.final["top1_agreement"] < 0.5


def test_stored_outputs_that_do_not_fit_the_split_are_computed_again(unlabelled, tmp_path):
    model_path, dataset_path = unlabelled
    outputs_file = tmp_path / "outputs.npz"
    np.savez(outputs_file, batch_size=np.array(32), batch_0=np.zeros((32, 10), np.float32))  # too few batches
    first = _run(model_path, dataset_path, tmp_path / "a", outputs_file)
    assert first.final["top1_agreement"] > 0.95
    with np.load(outputs_file) as stored:
        assert len(stored.files) == 5 and np.abs(stored["batch_1"]).sum() > 0  # written again, whole
    outputs_file.write_bytes(b"not an archive")
    again = _run(model_path, dataset_path, tmp_path / "b", outputs_file, known_baseline=dict(first.baseline))
    assert again.final["top1_agreement"] == first.final["top1_agreement"]


def test_compiled_latency_evaluates_the_compiled_models_at_the_timed_batch_size(example_files, tmp_path):
    model_path, dataset_path = example_files
    evaluation = EvaluationSpec(latency=True, latency_batch_sizes=[16], compile=True, max_samples=100)
    result = _run(model_path, dataset_path, tmp_path / "a", None, evaluation=evaluation)
    eager = _run(model_path, dataset_path, tmp_path / "b", None, evaluation=evaluation.model_copy(
        update={"latency": False}))
    assert result.final["evaluated_compiled"] and not eager.final["evaluated_compiled"]
    assert result.final["samples"] == eager.final["samples"] == 100
    # Real int8 kernels round a little differently from the eager Q/DQ graph: a sample or two at most.
    assert result.final["accuracy"] == pytest.approx(eager.final["accuracy"], abs=0.021)
    assert result.final["top1_agreement"] > 0.95 and "16" in result.final["latency_ms"]
