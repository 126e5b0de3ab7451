"""Students for distillation: uploaded, built from the zoo at a chosen width and depth, or derived from the teacher
by low-rank factorization, or (Hugging Face folder jobs) of some of the teacher's own layers.

Uploaded students arrive as model ids; the library does not know where uploads live, so whoever runs it passes a
resolver that turns an id into a loaded module (`Task.resolve_model`, or the `resolve_model` argument;
`run_pipeline(..., uploaded_models={id: path})` builds one from files). A 'layers' student is one of these: the
folder job builds it from the upload's folder (`compression.hf_layer_student`) and provides it under
`layers_student_id`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from compression import zoo
from compression.distill.low_rank import low_rank_factorize
from compression.half_precision import NOT_FLOAT32, TakesHalfInputs, widened
from compression.modes import evaluating
from compression.prune.masks import WeightMasks, prunable_weights
from compression.specs.distill import InputStudent, LayersStudent, LowRankStudent, UploadedStudent, ZooStudent
from compression.specs.student_fit import zoo_student_problems
from compression.task import ModelResolver, Task


@dataclass
class Student:
    model: nn.Module
    description: dict = field(default_factory=dict)  # how it was made, for the stage's metrics
    pruned: WeightMasks | None = None  # zeros of an earlier prune stage, held at zero while the student trains

    @contextmanager
    def training(self) -> Iterator[Callable[[nn.Module, int], None] | None]:
        """Wrap the student's training; yields the training loop's `before_step` hook (None when nothing is held)."""
        if self.pruned is None:
            yield None
            return
        with self.pruned.held():
            yield lambda _model, _step: self.pruned.apply_to_weights()


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def teacher_and_student(spec, model: nn.Module, task: Task) -> tuple[nn.Module, Student]:
    """The teacher and the student of a distillation stage that received `model`.

    Usually `model` is the teacher and the student is built from the spec; an `InputStudent` trains a copy of
    `model` itself against the uploaded model (`task.reference`)."""
    if isinstance(spec, InputStudent):
        student = copy.deepcopy(model)
        return task.reference, Student(student, {"kind": "input"}, _pruned_weights(student))
    return model, build_student(spec, model, task)


def _pruned_weights(model: nn.Module) -> WeightMasks | None:
    """Keep-masks of the weights that hold exact zeros (an earlier prune stage), so distillation keeps them pruned."""
    sparse = {name: weight != 0 for name, weight in prunable_weights(model).items() if bool((weight == 0).any())}
    if not sparse:
        return None
    masks = WeightMasks(model, list(sparse))
    masks.set(sparse)
    return masks


LAYERS_NEED_A_FOLDER = ("a 'layers' student is made from the layers of a Hugging Face folder upload, which this "
                        "job's model is not; "
                        "upload the model as a folder, or choose a 'low_rank', 'zoo' or 'upload' student")


def layers_student_id(spec: LayersStudent) -> str:
    """The model id under which a folder job provides the student of `spec`, whose layers it has resolved."""
    return "layers:" + ",".join(map(str, spec.layers or []))


def build_student(spec: UploadedStudent | ZooStudent | LowRankStudent | LayersStudent, teacher: nn.Module,
                  task: Task, *, resolve_model: ModelResolver | None = None) -> Student:
    """A fresh student for `teacher`; the teacher itself is never modified. Refused early (not at the first training
    step) when its outputs cannot be compared with the teacher's."""
    student = _build(spec, teacher, task, resolve_model)
    # Every output, not only the first that the loss reads: a student that drops the teacher's second head would
    # replace a model the user deploys with one that returns less.
    expected, actual = _output_shapes(teacher, task), _output_shapes(student.model, task)
    if expected != actual:
        raise ValueError(f"the student's output shape (every output) {actual} differs from the teacher's "
                         f"{expected} on the example inputs; distillation needs the same outputs")
    return student


def _output_shapes(model: nn.Module, task: Task) -> list[tuple[int, ...]]:
    """The shape of every tensor the model returns (a tuple, list or dict output in order)."""
    device = next(model.parameters()).device
    with evaluating(model):
        output = model(*(t.to(device) for t in task.example_inputs))
    return [tuple(tensor.shape) for tensor in _tensors(output)]


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else []
    return [tensor for value in values for tensor in _tensors(value)]


def _build(spec, teacher: nn.Module, task: Task, resolve_model: ModelResolver | None) -> Student:
    if isinstance(spec, UploadedStudent):
        resolver = resolve_model or task.resolve_model
        if resolver is None:
            raise RuntimeError("an uploaded student needs a model resolver (Task.resolve_model, or "
                               "run_pipeline(..., uploaded_models={model_id: path}))")
        # trained in float32 like every stage's model (float16 training overflows); stored as the upload is
        return Student(widened(resolver(spec.model_id)), {"kind": "upload", "model_id": spec.model_id})
    if isinstance(spec, LayersStudent):
        resolver = resolve_model or task.resolve_model
        if spec.layers is None or resolver is None:
            raise ValueError(LAYERS_NEED_A_FOLDER)
        try:
            model = resolver(layers_student_id(spec))
        except ValueError as exc:  # not provided: the job's model is no folder
            raise ValueError(LAYERS_NEED_A_FOLDER) from exc
        return Student(widened(model), {"kind": "layers", "layers": spec.layers})  # the folder's dtype: widened
    if isinstance(spec, ZooStudent):
        model = zoo.build(spec.architecture, **zoo_kwargs(spec, teacher, task))
        if any(t.dtype in NOT_FLOAT32 for t in task.example_inputs):  # a half-precision upload's inputs
            model = TakesHalfInputs(model)
        return Student(model, {"kind": "zoo", "architecture": spec.architecture, "width": spec.width,
                               "depth": spec.depth})
    if isinstance(spec, LowRankStudent):
        model = copy.deepcopy(teacher)
        factorizations = low_rank_factorize(model, rank=spec.rank, energy=spec.energy)
        if not factorizations:
            raise ValueError("no layer of the teacher gets smaller at this rank/energy; lower it")
        return Student(model, {"kind": "low_rank", "rank": spec.rank, "energy": spec.energy,
                               "layers": {f.name: f.rank for f in factorizations}})
    raise TypeError(f"unknown student spec {type(spec).__name__}")


def _scaled(base: int, multiplier: float, multiple_of: int = 1) -> int:
    return max(multiple_of, round(base * multiplier / multiple_of) * multiple_of)


def zoo_kwargs(spec: ZooStudent, teacher: nn.Module, task: Task) -> dict:
    """Arguments of `zoo.build` for a student with the teacher's input shape and number of outputs, its widths
    and depth scaled from each architecture's defaults by `spec.width` and `spec.depth`."""
    output_shapes = _output_shapes(teacher, task)
    output_shape = output_shapes[0]
    problems = zoo_student_problems(spec.architecture, [((None, *t.shape[1:]), t.is_floating_point())
                                                        for t in task.example_inputs],
                                    [(None, *shape[1:]) for shape in output_shapes])
    if problems:
        raise ValueError("; ".join(problems))
    example = task.example_inputs[0]
    num_classes = output_shape[-1]
    shape = tuple(example.shape[1:])
    if spec.architecture == "resnet":
        return {"in_channels": shape[0], "num_classes": num_classes, "width_mult": spec.width,
                "depth_mult": spec.depth}
    if spec.architecture == "small_cnn":
        if spec.depth != 1.0:
            raise ValueError("small_cnn has a fixed depth of two blocks; leave depth at 1.0")
        return {"in_channels": shape[0], "image_size": shape[-1], "num_classes": num_classes,
                "width": _scaled(16, spec.width), "hidden": _scaled(64, spec.width)}
    if spec.architecture == "mlp":
        layers = max(1, round(2 * spec.depth))
        return {"input_shape": shape, "num_classes": num_classes,
                "hidden": tuple(_scaled(256 // 2**i, spec.width) for i in range(layers))}
    if spec.architecture == "tiny_transformer":
        train_ids = task.dataset.split(task.train_split).inputs[task.dataset.input_names[0]]
        dim = _scaled(64, spec.width, multiple_of=4)
        return {"vocab_size": int(train_ids.max()) + 1, "max_length": shape[0], "num_classes": num_classes,
                "dim": dim, "heads": 4, "layers": max(1, round(2 * spec.depth)), "ff_dim": 2 * dim}
    raise ValueError(f"unknown architecture '{spec.architecture}'; known: {sorted(zoo.ARCHITECTURES)}")
