"""The cases `bench.cnn_shape_sweep` found failing. A CNN exported with a bounded dynamic batch
(`torch.export.Dim("batch", min=1, max=64)`, as users do for mobile and serving) ran every method that trains into
the program's guard (`AssertionError: Guard failed: x.size()[0] <= 64`) at its first evaluation batch of 256; and
a BatchNorm after a concat (DenseNet, a text CNN) made int8 PTQ 15-50 times slower than on the other families."""

import pytest
import torch
import torch.nn.functional as F

from app.core.errors import InvalidInput
from bench.cnn_families import CASE_NAMES, build_case, export_case
from compression.context import RunContext
from compression.dry_run import DryRunFailed
from compression.inspect import inspect_npz, inspect_pt2
from compression.io import batch_bound, load_model, load_program
from compression.pipeline import run_pipeline
from compression.ptq.batch_norm_affine import batch_norms_as_affine
from compression.ptq.quantize import prepare_int8
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, PruneSpec, PTQSpec, QATSpec, QuantNoiseSpec
from compression.specs.distill import LowRankStudent, ZooStudent
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


def test_a_batch_norm_after_a_concat_is_an_affine_before_convert_and_computes_the_same(tmp_path):
    """DenseNet's BN-ReLU-conv after a concat is no conv's BatchNorm: left in the graph, torchao's convert traced
    96 conv-BN patterns to fold it (the sweep: densenet PTQ 45 s, text CNN 56 s, against 1-3 s for the rest)."""
    case = build_case("densenet", samples=8)
    inputs = (torch.from_numpy(case.inputs[:4]),)
    prepared = prepare_int8(case.model, inputs, [inputs])
    with torch.no_grad():
        expected = prepared(*inputs)
        assert batch_norms_as_affine(prepared) == 4  # one per dense layer (3) and the transition
        torch.testing.assert_close(prepared(*inputs), expected, rtol=1e-5, atol=1e-5)
    assert not [node for node in prepared.graph.nodes if node.target == torch.ops.aten.batch_norm.default]

    model_path, dataset_path = export_case(case, tmp_path)
    result = run_pipeline(model_path, dataset_path, [PTQSpec(calibration_samples=4)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "ptq")
    assert result.final["method_metrics"]["batch_norms_as_affine"] == 4
    with torch.no_grad():
        cosine = F.cosine_similarity(result.stages[0].model(*inputs), case.model(*inputs)).min()
    assert cosine > 0.98


def test_quant_noise_without_labels_or_distillation_is_refused_before_any_work(tmp_path):
    """A UNet's dense output has no class labels: quant_noise's default (train on labels) failed in the stage,
    after the baseline evaluation (minutes on a real model); now at submission and in the dry run."""
    from app.jobs.validation import validate_job

    model_path, dataset_path = export_case(build_case("unet", samples=8), tmp_path)
    reason = r"quant_noise trains on labels, but the training split 'train' has none \('train.y'\): set distillation"
    with pytest.raises(DryRunFailed, match=reason):
        run_pipeline(model_path, dataset_path, [QuantNoiseSpec(training=_training())], EvaluationSpec(latency=False),
                     RunContext(), tmp_path / "run")
    job = JobCreate(model_id="mdl_0123456789abcdef", dataset_id="ds_0123456789abcdef", stages=[QuantNoiseSpec()])
    with pytest.raises(InvalidInput, match=reason):
        validate_job(job, inspect_pt2(model_path), inspect_npz(dataset_path))
    distilled = QuantNoiseSpec(distillation={})
    validate_job(job.model_copy(update={"stages": [distilled]}), inspect_pt2(model_path), inspect_npz(dataset_path))


def test_a_zoo_student_for_a_two_output_model_is_refused_in_the_dry_run(tmp_path):
    """A zoo student gives one output: on a model with a second head (boxes), KD 'succeeded' and handed back a
    model without it; only the first output was compared."""
    model_path, dataset_path = export_case(build_case("two_heads", samples=8), tmp_path)
    stage = KDSpec(student=ZooStudent(architecture="resnet"), training=_training())
    with pytest.raises(DryRunFailed, match=r"zoo students give one output \[N, outputs\], but the model gives "
                                           r"\[\[None, 10\], \[None, 4\]\]"):
        run_pipeline(model_path, dataset_path, [stage], EvaluationSpec(latency=False), RunContext(), tmp_path / "r")


@pytest.mark.parametrize("family, turned", [("tall_audio", [2, None, None, None]), ("resnet_basic", [None] * 4)])
def test_prune_distil_prune_quantize_runs_on_what_each_stage_hands_on(tmp_path, family, turned):
    # An audio CNN's float stages hand on programs whose tall convs they turned on their side: the channel
    # analysis passes the transposes. A low-rank student hands on a graph whose factorised layers have no traced
    # shapes: structured pruning after it failed with a TypeError in the channel analysis until it re-exported.
    model_path, dataset_path = export_case(build_case(family, samples=64), tmp_path)
    stages = [PruneSpec(kind="structured", sparsity=0.3, recalibrate_batches=1),
              KDSpec(student=LowRankStudent(energy=0.9), training=_training()),
              PruneSpec(kind="structured", sparsity=0.3, recalibrate_batches=1), PTQSpec(calibration_samples=16)]
    result = run_pipeline(model_path, dataset_path, stages, EvaluationSpec(latency=False), RunContext(),
                          tmp_path / "job")
    # On the audio CNN the first prune turns both convs; the stages after it find none left to turn.
    assert [stage.metrics["method_metrics"].get("tall_convs_on_their_side") for stage in result.stages] == turned
    assert result.stages[2].metrics["method_metrics"]["parameter_reduction"] > 0
    assert result.stages[-1].metrics["method_metrics"]["quantized_layers"] >= 3


def test_every_family_of_the_sweep_builds_and_exports_with_a_dynamic_batch(tmp_path):
    """The sweep's cases (bench/cnn_families.py, bench/cnn_more_families.py) stay buildable: each exports and its
    program runs at another batch size than the one it was exported with."""
    for name in CASE_NAMES:
        case = build_case(name, samples=6)
        model_path, _ = export_case(case, tmp_path)
        inputs = torch.from_numpy(case.inputs[:5])
        with torch.no_grad():
            got, want = load_program(model_path).module()(inputs), case.model(inputs)
        for g, w in zip(*((o if isinstance(o, tuple) else (o,)) for o in (got, want))):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
