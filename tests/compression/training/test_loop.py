import math

import numpy as np
import pytest
import torch
from torch import nn

from compression.context import Cancelled, RunContext
from compression.data import Dataset
from compression.modes import is_training
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.training import train
from compression.training.schedule import lr_factor


def make_task(tmp_path, n=256, features=8, classes=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype(np.float32)
    true_weights = rng.normal(size=(features, classes))
    y = (x @ true_weights).argmax(axis=1)
    dataset = Dataset.from_arrays({"train.x": x, "train.y": y, "val.x": x[:64], "val.y": y[:64]}, ["x"])
    return Task(dataset=dataset, reference=nn.Identity(), example_inputs=(torch.from_numpy(x[:4]),),
                workdir=tmp_path)


def make_mlp(features=8, classes=3, dropout=0.0):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, classes))


def cross_entropy(model, batch, step):
    return nn.functional.cross_entropy(model(*batch.inputs), batch.labels)


def accuracy(task):
    split = task.dataset.split("val")
    x, y = torch.from_numpy(split.inputs["x"]), torch.from_numpy(split.labels)
    return lambda model: {"accuracy": float((model(x).argmax(1) == y).float().mean())}


class CheckpointStore(dict):
    def context(self, **kwargs) -> RunContext:
        return RunContext(save_checkpoint=self.__setitem__, load_checkpoint=self.get, **kwargs)


def test_loss_decreases_and_model_ends_in_eval_mode(tmp_path):
    task = make_task(tmp_path)
    model = make_mlp(dropout=0.1)
    events = []
    spec = TrainingSpec(steps=120, batch_size=32, lr=1e-2, eval_every=60)
    report = train(model, cross_entropy, spec, task, RunContext(report=events.append),
                   evaluate_fn=accuracy(task))
    first_losses = [event.metrics["loss"] for event in events[:10]]
    assert report.final_loss < 0.5 * (sum(first_losses) / len(first_losses))
    assert report.metrics["accuracy"] > 0.9
    assert report.steps == 120 and report.resumed_from_step == 0
    assert "accuracy" in events[59].metrics  # the intermediate evaluation reached progress
    assert [event.step for event in events] == list(range(1, 121))
    assert not model.training


def test_warmup_then_cosine_learning_rates(tmp_path):
    spec = TrainingSpec(steps=12, warmup_steps=4, lr=0.1)
    factors = [lr_factor(step, spec) for step in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0
    assert math.isclose(factors[8], 0.5)  # half-way through the 8 decay steps
    assert all(a > b for a, b in zip(factors[4:], factors[5:])) and factors[-1] > 0
    assert all(factor == 1.0 for factor in
               (lr_factor(step, TrainingSpec(steps=12, warmup_steps=4, schedule="constant")) for step in range(4, 12)))

    task = make_task(tmp_path)
    events = []
    train(make_mlp(), cross_entropy, spec, task, RunContext(report=events.append))
    assert [event.metrics["lr"] for event in events] == pytest.approx([0.1 * factor for factor in factors])


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(ValueError):
        TrainingSpec(steps=10, warmup_steps=11)


def test_global_norm_clipping(tmp_path):
    weights = nn.Parameter(torch.zeros(3))
    holder = nn.Module()
    holder.weights = weights
    direction = torch.tensor([300.0, 400.0, 0.0])  # gradient norm 500
    events = []
    spec = TrainingSpec(steps=1, optimizer="sgd", momentum=0.0, lr=1.0, schedule="constant", grad_clip_norm=1.0)
    train(holder, lambda model, batch, step: (model.weights * direction).sum(), spec, make_task(tmp_path),
          RunContext(report=events.append))
    assert torch.allclose(weights.detach(), torch.tensor([-0.6, -0.8, 0.0]))
    assert events[0].metrics["grad_norm"] == pytest.approx(500.0)


def test_cancellation_stops_at_the_next_step_and_checkpoints(tmp_path):
    task = make_task(tmp_path)
    store = CheckpointStore()
    steps_run = []

    def counting_loss(model, batch, step):
        steps_run.append(step)
        return cross_entropy(model, batch, step)

    ctx = store.context(should_stop=lambda: "cancelled by user" if len(steps_run) >= 3 else None)
    with pytest.raises(Cancelled):
        train(make_mlp(), counting_loss, TrainingSpec(steps=50, batch_size=16), task, ctx)
    assert steps_run == [0, 1, 2]
    resumed = train(make_mlp(), cross_entropy, TrainingSpec(steps=5, batch_size=16), task, store.context())
    assert resumed.resumed_from_step == 3 and resumed.steps == 5


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_after_crash_equals_uninterrupted_run(tmp_path, optimizer):
    task = make_task(tmp_path)
    spec = TrainingSpec(steps=12, batch_size=32, optimizer=optimizer, lr=1e-2, warmup_steps=2,
                        checkpoint_every=5)  # 256 / 32 = 8 batches per epoch: the run crosses an epoch boundary
    uninterrupted = make_mlp(dropout=0.3)
    train(uninterrupted, cross_entropy, spec, task, RunContext(seed=7))

    store = CheckpointStore()

    def crash_at_step_7(model, batch, step):
        if step == 7:
            raise RuntimeError("worker died")
        return cross_entropy(model, batch, step)

    with pytest.raises(RuntimeError):
        train(make_mlp(dropout=0.3), crash_at_step_7, spec, task, store.context(seed=7))
    torch.manual_seed(12345)  # a different RNG state in the new process must not matter
    resumed_model = make_mlp(dropout=0.3)
    report = train(resumed_model, cross_entropy, spec, task, store.context(seed=7))
    assert report.resumed_from_step == 5
    for expected, actual in zip(uninterrupted.parameters(), resumed_model.parameters()):
        assert torch.equal(expected, actual)


def test_exported_module_trains_batch_norm_in_train_mode(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(128, 1, 8, 8)).astype(np.float32) * 3 + 2
    labels = (images[:, 0, :4].mean(axis=(1, 2)) > images[:, 0, 4:].mean(axis=(1, 2))).astype(np.int64)
    dataset = Dataset.from_arrays({"train.x": images, "train.y": labels}, ["x"])
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2)).eval()
    example = (torch.from_numpy(images[:4]),)
    exported = torch.export.export(eager, example,
                                   dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    task = Task(dataset=dataset, reference=eager, example_inputs=example, workdir=tmp_path)
    report = train(exported, cross_entropy, TrainingSpec(steps=40, batch_size=32, lr=1e-2), task, RunContext())
    running_mean = dict(exported.named_buffers())["1.running_mean"]
    assert float(running_mean.abs().sum()) > 0.1  # batch norm updated its statistics: it trained in train mode
    assert report.final_loss < 0.6
    assert not is_training(exported)
    first = exported(*example)
    assert torch.equal(first, exported(*example))  # eval mode: running statistics, deterministic


def test_batch_factory_receives_the_step_to_resume_from(tmp_path):
    task = make_task(tmp_path)
    batch = next(task.dataset.split("train").batches(16))
    starts, events = [], []

    def factory(start_step):
        starts.append(start_step)
        while True:
            yield batch

    store = CheckpointStore()
    spec = TrainingSpec(steps=6, checkpoint_every=2)
    with pytest.raises(Cancelled):
        train(make_mlp(), cross_entropy, spec, task,
              store.context(report=events.append, should_stop=lambda: "stop" if len(events) >= 3 else None),
              batches=factory)
    train(make_mlp(), cross_entropy, spec, task, store.context(), batches=factory)
    assert starts == [0, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision runs on CUDA only")
def test_mixed_precision_on_cuda(tmp_path):
    task = make_task(tmp_path)
    model = make_mlp()
    report = train(model, cross_entropy, TrainingSpec(steps=60, batch_size=32, lr=1e-2), task,
                   RunContext(device="cuda"), evaluate_fn=lambda m: {"on_cuda": next(m.parameters()).is_cuda})
    assert report.metrics["on_cuda"] and report.final_loss < 0.5


def test_a_diverging_loss_stops_training_naming_the_step_and_learning_rate(tmp_path):
    from compression.errors import NonFiniteLoss
    task = make_task(tmp_path)
    spec = TrainingSpec(steps=50, batch_size=32, lr=0.5, schedule="constant", grad_clip_norm=None)

    def blows_up_at_step_7(model, batch, step):
        loss = cross_entropy(model, batch, step)
        return loss * math.inf if step == 6 else loss

    with pytest.raises(NonFiniteLoss) as caught:
        train(make_mlp(), blows_up_at_step_7, spec, task, RunContext())
    assert isinstance(caught.value, ValueError)  # a runner reports it as the user's input to fix
    assert (caught.value.step, caught.value.lr) == (7, 0.5)
    assert "step 7" in str(caught.value) and "learning rate 0.5" in str(caught.value)
