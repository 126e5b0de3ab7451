"""Zoo students are checked against the model's inputs and outputs from shapes alone (what the API can see)."""

import pytest
import torch

from compression import zoo
from compression.specs.distill import ZooStudent
from compression.specs.student_fit import ZOO_ARCHITECTURES, zoo_student_problems

IMAGES = [((None, 1, 8, 8), True)]
AUDIO = [((None, 1, 1024), True)]
TOKENS = [((None, 16), False)]
LOGITS = [(None, 10)]


def test_the_spec_offers_exactly_the_zoo():
    assert set(ZOO_ARCHITECTURES) == set(zoo.ARCHITECTURES)
    with pytest.raises(ValueError, match="'mlp', 'small_cnn', 'resnet' or 'tiny_transformer'"):
        ZooStudent(architecture="cnn")


@pytest.mark.parametrize("architecture, inputs", [
    ("small_cnn", IMAGES), ("resnet", IMAGES), ("mlp", IMAGES), ("mlp", AUDIO), ("tiny_transformer", TOKENS)])
def test_students_that_fit(architecture, inputs):
    assert zoo_student_problems(architecture, inputs, LOGITS) == []


@pytest.mark.parametrize("architecture, inputs, outputs, expected", [
    ("small_cnn", AUDIO, LOGITS, "'small_cnn' takes images [N, C, H, W] with H == W, but the model's input is "
                                 "[N, 1, 1024] float; architectures that fit: ['mlp']"),
    ("small_cnn", [((None, 3, 8, 16), True)], LOGITS, "with H == W"),
    ("resnet", TOKENS, LOGITS, "architectures that fit: ['tiny_transformer']"),
    ("tiny_transformer", IMAGES, LOGITS, "takes token ids [N, L]"),
    ("mlp", [((None, None), True)], LOGITS, "[N, N] float; upload a student"),
    ("mlp", IMAGES * 2, LOGITS, "zoo students take one input, but the model takes 2"),
    ("mlp", IMAGES, [(None, 16, 384)], "give one output [N, outputs]"),
    ("cnn", IMAGES, LOGITS, "unknown zoo architecture 'cnn'; choose one of ['mlp', 'small_cnn'"),
])
def test_students_that_do_not_fit_say_why(architecture, inputs, outputs, expected):
    assert expected in "; ".join(zoo_student_problems(architecture, inputs, outputs))


def test_the_library_refuses_a_misfit_before_building(tiny_task_1d):
    from compression.students import build_student
    teacher, task = tiny_task_1d
    with pytest.raises(ValueError, match="'small_cnn' takes images"):
        build_student(ZooStudent(architecture="small_cnn"), teacher, task)
    assert build_student(ZooStudent(architecture="mlp", width=0.1), teacher, task).model(torch.randn(2, 1, 64)).shape \
        == (2, 5)


@pytest.fixture
def tiny_task_1d(tmp_path):
    from compression.data import Dataset
    from compression.task import Task
    teacher = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 5, padding=2), torch.nn.Flatten(), torch.nn.Linear(256, 5))
    inputs = torch.randn(8, 1, 64)
    dataset = Dataset.from_arrays({"val.x": inputs.numpy()}, ["x"])
    return teacher.eval(), Task(dataset, teacher, (inputs,), tmp_path)
