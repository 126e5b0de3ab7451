"""Every job starts with a dry run of its stages on the real model and two rows: a job that cannot work fails
there, before the baseline evaluation, with the stage and the reason (compression.dry_run, issue 10)."""

import numpy as np
import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.dry_run import DryRunFailed
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, PruneSpec, PTQSpec, QuantizedDistillationSpec


class Head(nn.Module):
    """One linear layer whose output is the graph's: no channel can be pruned without changing the output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    model_path = save_program(export_model(Head().eval(), (x[:8],)), tmp_path / "head.pt2")
    labels = np.arange(64) % 4
    np.savez(tmp_path / "d.npz", **{"train.x": x[:48].numpy(), "train.y": labels[:48],
                                    "val.x": x[48:].numpy(), "val.y": labels[48:]})
    return model_path, tmp_path / "d.npz"


@pytest.mark.parametrize("stages, index, reason", [
    # the channel analysis: the only layer feeds the graph's output
    ([PruneSpec(kind="structured", sparsity=0.5)], 0, "no channel group can be pruned at sparsity 0.5"),
    # a later stage, after one that keeps the architecture: found before the first stage's work
    ([PruneSpec(sparsity=0.5), PruneSpec(kind="structured", sparsity=0.3)], 1, "no channel group can be pruned"),
    # the student is built and run: an uploaded student with another output width
    ([KDSpec(student={"kind": "upload", "model_id": "mdl_student"})], 0, "differs from the teacher's"),
    # feature distillation naming a value the student does not have
    ([KDSpec(student={"kind": "input"}, features=[{"student": "no_such_layer", "teacher": "fc"}])], 0,
     "no_such_layer"),
    # weight quantizers for a training stage: a skip pattern that names no weight of the model
    ([QuantizedDistillationSpec(skip=["fc.bias"])], 0, "are not quantizable weights"),
    # iPQ's block sizes from the layers' shapes: a 64-weight layer is below its minimum
    ([IPQSpec(min_weights=1000)], 0, "no weight can be product-quantized"),
    # the default int8 path selects layers as the general path does: a pattern naming no layer is refused
    ([PTQSpec(exclude=["fc.*"])], 0, "exclude patterns ['fc.*'] match no layer"),
])
def test_a_job_that_would_fail_late_fails_in_the_dry_run_before_any_evaluation(files, tmp_path, stages, index,
                                                                               reason):
    student = nn.Sequential(nn.Linear(16, 3)).eval()
    save_program(export_model(student, (torch.randn(8, 16),)), tmp_path / "student.pt2")
    events = []
    with pytest.raises(DryRunFailed) as failed:
        run_pipeline(*files, stages, EvaluationSpec(latency=False), RunContext(report=events.append),
                     tmp_path / "work", uploaded_models={"mdl_student": tmp_path / "student.pt2"})
    message = str(failed.value)
    assert message.startswith(f"dry run: stage {index} ({stages[index].method}) cannot run on this model") \
        and reason in message
    phases = [event.phase for event in events]
    assert "dry_run" in phases and "evaluate" not in phases  # the upload was not even evaluated
    assert isinstance(failed.value, ValueError)  # reported as the user's to fix (invalid_input), not a crash


def test_a_job_that_can_run_reports_what_its_dry_run_checked(files, tmp_path):
    stages = [PruneSpec(sparsity=0.5), PTQSpec(calibration_samples=16)]
    result = run_pipeline(*files, stages, EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    checked = result.to_metrics()["dry_run"]
    assert checked["0:prune"]["checked"] == "prunable weights found"
    # after an unstructured prune the model keeps the upload's architecture, so the int8 stage was checked too
    assert checked["1:ptq"]["observers"] >= 2 and "time_s" in checked["1:ptq"]  # the input and the output


@pytest.mark.parametrize("stage", [PTQSpec(calibration_samples=16), PruneSpec(kind="structured", sparsity=0.25),
                                   IPQSpec()], ids=["ptq", "prune", "ipq"])
def test_a_quantized_download_uploaded_again_is_refused_with_why(tmp_path, stage):
    """A job's int8 model uploaded again: int8 PTQ "succeeded" 0.92x larger, the other methods said "no layer" or
    "no channel group" without saying that its layers are int8 already."""
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    save_program(export_model(model, (x[:8],)), tmp_path / "float.pt2")
    np.savez(tmp_path / "d.npz", **{"train.x": x[:48].numpy(), "val.x": x[48:].numpy()})
    first = run_pipeline(tmp_path / "float.pt2", tmp_path / "d.npz", [PTQSpec(calibration_samples=16)],
                         EvaluationSpec(latency=False), RunContext(), tmp_path / "first")
    download = next(artifact.path for artifact in first.stages[0].artifacts if artifact.path.suffix == ".pt2")
    with pytest.raises(DryRunFailed, match="the upload is already quantized: 3 of its layers hold int8 weights"):
        run_pipeline(download, tmp_path / "d.npz", [stage], EvaluationSpec(latency=False), RunContext(),
                     tmp_path / "again")
