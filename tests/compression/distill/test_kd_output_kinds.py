"""KD picks its loss from the output kind (BCE for sigmoid bins, cosine for embeddings) and reports the student's
fidelity before and after training."""

import copy

import pytest
import torch

from compression.context import RunContext
from compression.data import Dataset
from compression.distill.kd import apply_kd
from compression.distill.losses import output_loss, output_loss_name
from compression.io import export_model, load_model
from compression.specs.distill import KDSpec
from compression.task import Task
from tests.compression.output_models import MeanPooledEncoder, PitchNet, encoder_inputs
from tests.compression.real_shapes import TallAudioNet


def _perturbed(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    torch.manual_seed(1)
    noisy = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in noisy.parameters():
            parameter.add_(torch.randn_like(parameter) * scale * parameter.std())
    return noisy


def _task(tmp_path, reference, arrays: dict, names: list[str]) -> Task:
    dataset = Dataset.from_arrays(arrays, names)
    example = dataset.split("val").head(8).inputs
    return Task(dataset, export_model(reference, example).module(), example, tmp_path)


@pytest.mark.parametrize("kind", ["sigmoid", "embeddings"])
def test_the_loss_follows_the_output_kind_and_training_brings_the_student_closer(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "sigmoid":
        teacher, audio = PitchNet().eval(), torch.randn(192, 1, 32)
        task = _task(tmp_path, teacher, {"train.x": audio[:128].numpy(), "val.x": audio[128:].numpy()}, ["x"])
    else:
        teacher, (ids, mask) = MeanPooledEncoder().eval(), encoder_inputs(192)
        task = _task(tmp_path, teacher, {"train.input_ids": ids[:128].numpy(), "train.attention_mask":
                                         mask[:128].numpy(), "val.input_ids": ids[128:].numpy(),
                                         "val.attention_mask": mask[128:].numpy()}, ["input_ids", "attention_mask"])
    spec = KDSpec(student={"kind": "input"}, training={"steps": 40, "batch_size": 32, "lr": 3e-3})
    result = apply_kd(spec, _perturbed(teacher, 0.8), task, RunContext())
    metrics = result.metrics
    assert (metrics["output_kind"], metrics["loss"]) == (kind, {"sigmoid": "bce", "embeddings": "cosine"}[kind])
    fidelity = metrics["student_fidelity"]
    assert fidelity["metric"] == {"sigmoid": "soft_dice", "embeddings": "similarity_spearman"}[kind]
    assert fidelity["after"] > fidelity["before"] + 2, fidelity
    assert fidelity["after"] == pytest.approx(100 * metrics["student"][fidelity["metric"]], abs=1e-3)


def test_class_index_labels_do_not_train_sigmoid_outputs(tmp_path):
    teacher, audio = PitchNet().eval(), torch.randn(64, 1, 32)
    task = _task(tmp_path, teacher, {"train.x": audio[:32].numpy(), "train.y": torch.zeros(32).long().numpy(),
                                     "val.x": audio[32:].numpy()}, ["x"])
    spec = KDSpec(student={"kind": "input"}, alpha=0.5, training={"steps": 1})
    with pytest.raises(ValueError, match="alpha > 0 with sigmoid outputs needs 0/1 labels .* not class indices"):
        apply_kd(spec, teacher, task, RunContext())


def test_output_losses_are_zero_at_the_teacher_and_grow_away_from_it():
    probabilities = torch.rand(4, 12)
    embeddings = torch.randn(4, 16)
    assert output_loss(embeddings * 2, embeddings, "cosine") == pytest.approx(0, abs=1e-6)
    assert output_loss(-embeddings, embeddings, "cosine") == pytest.approx(2)
    assert output_loss(embeddings, embeddings, "mse") == 0
    at_teacher = output_loss(probabilities, probabilities, "bce")
    assert output_loss(1 - probabilities, probabilities, "bce") > at_teacher  # BCE is smallest at the target
    with pytest.raises(ValueError, match="unknown distillation loss"):
        output_loss(embeddings, embeddings, "softmax")


def test_function_matching_matches_sigmoid_outputs_with_bce_and_reports_the_students_fidelity(tmp_path):
    from compression.distill.function_matching import apply_function_matching
    from compression.specs.distill import FunctionMatchingSpec
    torch.manual_seed(0)
    teacher, audio = PitchNet().eval(), torch.randn(160, 1, 32)
    task = _task(tmp_path, teacher, {"train.x": audio[:128].numpy(), "val.x": audio[128:].numpy()}, ["x"])
    spec = FunctionMatchingSpec(student={"kind": "input"}, training={"steps": 20, "batch_size": 32, "lr": 3e-3})
    metrics = apply_function_matching(spec, _perturbed(teacher, 0.8), task, RunContext()).metrics
    assert (metrics["output_kind"], metrics["loss"]) == ("sigmoid", "bce")
    assert metrics["student_fidelity"]["metric"] == "soft_dice"
    assert metrics["student_fidelity"]["after"] > metrics["student_fidelity"]["before"]


class _NormalisedPitchNet(torch.nn.Module):
    """PitchNet with a batch norm after its convolution, momentum as torchcrepe builds it (0) or PyTorch's (0.1)."""

    def __init__(self, momentum: float):
        super().__init__()
        self.conv, self.norm = torch.nn.Conv1d(1, 4, 5), torch.nn.BatchNorm1d(4, momentum=momentum)
        self.head = torch.nn.Linear(4 * 32, 12)

    def forward(self, x):
        return torch.sigmoid(self.head(self.norm(self.conv(torch.nn.functional.pad(x, (2, 2)))).flatten(1)))


@pytest.mark.parametrize("momentum", [0.0, 0.1])
def test_a_student_whose_batch_norms_never_measure_their_statistics_is_named_in_a_warning(tmp_path, momentum):
    torch.manual_seed(0)
    teacher, audio = PitchNet().eval(), torch.randn(96, 1, 32)
    task = _task(tmp_path, teacher, {"train.x": audio[:64].numpy(), "val.x": audio[64:].numpy()}, ["x"])
    student = export_model(_NormalisedPitchNet(momentum).eval(), task.example_inputs).module()
    task.resolve_model = {"student": student}.__getitem__
    spec = KDSpec(student={"kind": "upload", "model_id": "student"}, training={"steps": 4, "batch_size": 16})
    result = apply_kd(spec, teacher, task, RunContext())
    warnings = result.metrics.get("warnings", [])
    running_mean = dict(result.model.named_buffers())["norm.running_mean"]
    if momentum == 0:
        # Trained as the affine map inference computes: the statistics stayed at their initial values.
        assert not running_mean.any()
        assert len(warnings) == 1 and "batch norms ['norm'] have momentum 0" in warnings[0]
        assert "non-zero BatchNorm momentum" in warnings[0]
    else:
        assert running_mean.any() and warnings == []


def test_a_students_tall_convs_are_written_on_their_side_and_the_stage_times_what_it_wrote(tmp_path):
    torch.manual_seed(0)
    teacher, audio = TallAudioNet().eval(), torch.randn(48, 128)
    task = _task(tmp_path, teacher, {"train.x": audio[:32].numpy(), "val.x": audio[32:].numpy()}, ["x"])
    task.resolve_model = {"student": export_model(TallAudioNet().eval(), task.example_inputs).module()}.__getitem__
    spec = KDSpec(student={"kind": "upload", "model_id": "student"}, training={"steps": 2, "batch_size": 16})
    result = apply_kd(spec, teacher, task, RunContext())
    assert result.metrics["tall_convs_on_their_side"] == 3
    assert result.model.get_parameter("first.weight").shape == (8, 1, 1, 32)  # the stage's model is the file's
    written = load_model(result.artifacts[0].path)
    torch.testing.assert_close(written(audio), result.model(audio))


def test_a_multi_label_models_logits_are_distilled_label_by_label(tmp_path):
    """Softmax-KL would couple labels that are independent: each logit is matched by binary cross-entropy
    against the teacher's probability, and the gradient vanishes where the student equals the teacher."""
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    x = torch.randn(192, 8)
    tags = (torch.rand(192, 4) > 0.5).float()
    task = _task(tmp_path, teacher, {"train.x": x[:128].numpy(), "train.y": tags[:128].numpy(),
                                     "val.x": x[128:].numpy()}, ["x"])
    task.multi_label = True
    spec = KDSpec(student={"kind": "input"}, training={"steps": 40, "batch_size": 32, "lr": 3e-3})
    metrics = apply_kd(spec, _perturbed(teacher, 0.8), task, RunContext()).metrics
    assert (metrics["output_kind"], metrics["loss"]) == ("logits", "bce_logits")
    assert metrics["student_fidelity"]["after"] > metrics["student_fidelity"]["before"], metrics["student_fidelity"]
    logits = torch.randn(5, 4, requires_grad=True)
    output_loss(logits, logits.detach().clone(), "bce_logits").backward()
    assert logits.grad.abs().max() < 1e-6
    assert output_loss_name("logits", multi_label=True) == "bce_logits"
    assert output_loss_name("logits", multi_label=False) == "kl" == output_loss_name("logits", False)
    assert output_loss_name("sigmoid", multi_label=True) == "bce"


@pytest.mark.parametrize("method", ["quantized_distillation", "differentiable_quantization"])
def test_quantized_training_distils_with_the_loss_of_the_output_kind(tmp_path, method):
    """Before, both used the class-logit KL whatever the output: a softmax over an embedding's dimensions."""
    from compression.distill.quantized import apply_differentiable_quantization, apply_quantized_distillation
    from compression.specs.distill import DifferentiableQuantizationSpec, QuantizedDistillationSpec

    torch.manual_seed(0)
    teacher, (ids, mask) = MeanPooledEncoder().eval(), encoder_inputs(96)
    task = _task(tmp_path, teacher, {"train.input_ids": ids[:64].numpy(), "train.attention_mask": mask[:64].numpy(),
                                     "val.input_ids": ids[64:].numpy(), "val.attention_mask": mask[64:].numpy()},
                 ["input_ids", "attention_mask"])
    training = {"steps": 2, "batch_size": 16}
    if method == "quantized_distillation":
        result = apply_quantized_distillation(QuantizedDistillationSpec(bits=4, training=training), teacher, task,
                                              RunContext())
    else:
        result = apply_differentiable_quantization(DifferentiableQuantizationSpec(bits=4, training=training),
                                                   teacher, task, RunContext())
    assert (result.metrics["output_kind"], result.metrics["loss"]) == ("embeddings", "cosine")
