import copy

import pytest
import torch
from torch import nn

from compression.context import Cancelled, RunContext
from compression.distill.function_matching import apply_function_matching
from compression.specs.distill import FunctionMatchingSpec
from compression.specs.training import TrainingSpec
from tests.compression.distill.conftest import image_task


class Recording(nn.Module):
    """Passes through to `inner` and keeps every input batch it was called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def _run(tmp_path, conv_net, teacher_targets: str, steps: int, augment: dict):
    model, _, _ = conv_net
    teacher, student = Recording(model), Recording(copy.deepcopy(model))
    # No eval split: the teacher then runs only for training, so its calls can be counted exactly.
    task = image_task(tmp_path, model)
    task.dataset.splits.pop("val")
    spec = FunctionMatchingSpec(student={"kind": "upload", "model_id": "student"}, augment=augment,
                                teacher_targets=teacher_targets,
                                training=TrainingSpec(steps=steps, batch_size=32, lr=1e-3))
    task.resolve_model = {"student": student}.__getitem__
    apply_function_matching(spec, teacher, task, RunContext())
    # Before training, both run once on the example inputs (the student's interface check) and the teacher once
    # more (reading its output kind, which picks the loss).
    for recording in (teacher, teacher, student):
        assert torch.equal(recording.seen.pop(0), task.example_inputs[0])
    return teacher, student, task


def test_teacher_and_student_see_the_same_augmented_views(tmp_path, conv_net):
    teacher, student, task = _run(tmp_path, conv_net, "consistent", steps=6,
                                  augment={"crop_padding": 2, "flip": True, "mixup_alpha": 1.0})
    assert len(teacher.seen) == len(student.seen) == 6
    for teacher_view, student_view in zip(teacher.seen, student.seen):
        assert torch.equal(teacher_view, student_view)
    clean = torch.from_numpy(task.dataset.split("train").inputs["x"])
    # Every view is a new image: not one of them equals a training example (crop, flip and mixup happened).
    first_view = teacher.seen[0]
    assert not any(torch.equal(view, image) for view in first_view for image in clean)


def test_fixed_teacher_runs_once_per_training_example(tmp_path, conv_net):
    teacher, student, task = _run(tmp_path, conv_net, "fixed", steps=20,
                                  augment={"crop_padding": 2, "flip": True, "mixup_alpha": 1.0})
    examples_seen_by_teacher = sum(len(batch) for batch in teacher.seen)
    assert examples_seen_by_teacher == len(task.dataset.split("train")) == 256
    assert sum(len(batch) for batch in student.seen) == 20 * 32  # 2.5 epochs
    clean = torch.from_numpy(task.dataset.split("train").inputs["x"])
    assert torch.equal(torch.cat(teacher.seen), clean)  # clean inputs, in order, once


def test_a_cancelled_run_resumes_with_the_same_views(tmp_path, conv_net):
    model, _, _ = conv_net
    task = image_task(tmp_path, model)
    task.dataset.splits.pop("val")
    spec = FunctionMatchingSpec(student={"kind": "low_rank", "rank": 4},
                                training=TrainingSpec(steps=8, batch_size=32, lr=1e-2, checkpoint_every=3))
    uninterrupted = apply_function_matching(spec, model, task, RunContext(seed=3)).model

    store: dict[str, bytes] = {}
    stop = []

    def report(event):
        if event.phase == "train" and event.step == 5:
            stop.append("user cancelled")

    interrupted = RunContext(report=report, should_stop=lambda: stop[0] if stop else None,
                             save_checkpoint=store.__setitem__, load_checkpoint=store.get, seed=3)
    with pytest.raises(Cancelled):
        apply_function_matching(spec, model, task, interrupted)
    resumed_context = RunContext(save_checkpoint=store.__setitem__, load_checkpoint=store.get, seed=3)
    resumed = apply_function_matching(spec, model, task, resumed_context)
    assert resumed.metrics["train"]["resumed_from_step"] == 5
    for expected, actual in zip(uninterrupted.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(expected, actual)


def test_fixed_targets_that_would_not_fit_in_memory_are_refused_with_the_way_out(tmp_path, conv_net, monkeypatch):
    import compression.distill.function_matching as function_matching

    # 256 examples of 10 float32 logits: 10 KiB of targets, over this limit
    monkeypatch.setattr(function_matching, "MAX_TEACHER_TARGET_BYTES", 4096)
    with pytest.raises(ValueError, match=r"teacher_targets 'fixed' would hold .* use teacher_targets 'consistent'"):
        _run(tmp_path, conv_net, "fixed", steps=2, augment={})
