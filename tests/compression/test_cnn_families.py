"""The cases `bench.cnn_shape_sweep` found failing: a CNN exported with a bounded dynamic batch
(`torch.export.Dim("batch", min=1, max=64)`, as users do for mobile and serving) ran every method that trains into
the program's guard (`AssertionError: Guard failed: x.size()[0] <= 64`) at its first evaluation batch of 256."""

import pytest
import torch

from app.core.errors import InvalidInput
from bench.cnn_families import build_case, export_case
from compression.context import RunContext
from compression.dry_run import DryRunFailed
from compression.inspect import inspect_npz, inspect_pt2
from compression.io import batch_bound, load_model, load_program
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, PTQSpec, QATSpec, QuantNoiseSpec
from compression.specs.distill import LowRankStudent
from compression.specs.training import TrainingSpec
from core.jobs.spec import JobCreate

BOUND = 64


def _training(batch_size: int = 16) -> TrainingSpec:
    return TrainingSpec(steps=2, batch_size=batch_size, warmup_steps=0)


@pytest.fixture(scope="module")
def bounded_upload(tmp_path_factory):
    """ResNet basic blocks exported with batch <= 64; its val split (70 examples) is larger than that."""
    case = build_case("bounded_batch", samples=210)
    return export_case(case, tmp_path_factory.mktemp("bounded"))


def test_the_bound_is_read_from_the_program_and_from_its_description(bounded_upload, tmp_path):
    model_path, _ = bounded_upload
    assert batch_bound(load_program(model_path)) == BOUND == inspect_pt2(model_path).max_batch
    with pytest.raises(AssertionError, match="Guard failed"):  # what every stage ran into
        load_model(model_path)(torch.zeros(BOUND + 1, 3, 16, 16))
    unbounded, _ = export_case(build_case("resnet_basic", samples=8), tmp_path)
    assert batch_bound(load_program(unbounded)) is None is inspect_pt2(unbounded).max_batch


@pytest.mark.parametrize("stage", [
    QATSpec(calibration_samples=16, training=_training()),
    KDSpec(student=LowRankStudent(energy=0.9), training=_training()),
    QuantNoiseSpec(training=_training()),
    IPQSpec(kmeans_iterations=1, calibration_batches=1, min_weights=0, training=_training()),
], ids=lambda stage: stage.method)
def test_a_training_method_runs_on_a_bounded_batch_upload(bounded_upload, tmp_path, stage):
    model_path, dataset_path = bounded_upload
    # latency at 1 and 128: 128 is above the bound, so only batch 1 is timed (eagerly: quick)
    evaluation = EvaluationSpec(latency=stage.method == "qat", compile=False, latency_batch_sizes=[1, 128])
    result = run_pipeline(model_path, dataset_path, [stage], evaluation, RunContext(), tmp_path)
    assert result.baseline["samples"] == result.final["samples"] == 70  # evaluated in batches of at most 64
    if evaluation.latency:
        assert result.baseline["latency_batch_sizes_skipped"] == [128]
        assert set(result.final["latency_ms"]) == {"1"}
    # the stage's model keeps the user's bound: it deploys where the upload did
    programs = [artifact.path for artifact in result.stages[0].artifacts if artifact.kind == "model.pt2"]
    assert len(programs) == (stage.method != "ipq")  # iPQ's artifact is its packed format
    assert all(batch_bound(load_program(program)) == BOUND for program in programs)


def test_a_training_batch_above_the_bound_fails_at_once_with_the_reason(bounded_upload, tmp_path):
    model_path, dataset_path = bounded_upload
    stages = [KDSpec(student=LowRankStudent(energy=0.9), training=_training(batch_size=128)), PTQSpec()]
    with pytest.raises(DryRunFailed, match=r"stage 0 \(kd\): training.batch_size 128 is larger than the model "
                                           r"accepts \(it was exported with a batch dimension of at most 64\)"):
        run_pipeline(model_path, dataset_path, stages, EvaluationSpec(latency=False), RunContext(), tmp_path)
    # and at submission, from the upload's description (a 422 names it the same way)
    from app.jobs.validation import validate_job

    job = JobCreate(model_id="mdl_0123456789abcdef", dataset_id="ds_0123456789abcdef", stages=stages)
    with pytest.raises(InvalidInput, match="training.batch_size 128 is larger than the model accepts"):
        validate_job(job, inspect_pt2(model_path), inspect_npz(dataset_path))
    within = KDSpec(student=LowRankStudent(energy=0.9), training=_training(batch_size=BOUND))
    validate_job(job.model_copy(update={"stages": [within, PTQSpec()]}), inspect_pt2(model_path),
                 inspect_npz(dataset_path))
