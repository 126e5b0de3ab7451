"""Specs of the distillation methods: Hinton KD, function matching, quantized distillation and differentiable
quantization (Polino et al. 2018), plus the student a KD stage trains."""

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from compression.specs.common import Name, Patterns, Spec
from compression.specs.student_fit import ZooArchitecture
from compression.specs.training import TrainingSpec


class UploadedStudent(Spec):
    """A student the user uploaded as a `.pt2`; the service resolves `model_id` to the loaded module."""

    kind: Literal["upload"] = "upload"
    model_id: str = Field(min_length=1, max_length=64,
                          description="Id of an uploaded model with the teacher's inputs and output shape.")


class ZooStudent(Spec):
    """A built-in architecture (compression.zoo) scaled by width and depth multipliers, randomly initialised."""

    kind: Literal["zoo"] = "zoo"
    architecture: ZooArchitecture = Field(
        description="Built-in architecture: 'mlp' (float input of any rank), 'small_cnn' (square images [N, C, H, "
                    "W]), 'resnet' (images [N, C, H, W]) or 'tiny_transformer' (token ids [N, L]); the model must "
                    "have one such input and one output [N, outputs].")
    width: Annotated[float, Field(gt=0, le=4)] = Field(0.5, description="Channel/hidden width multiplier.")
    depth: Annotated[float, Field(gt=0, le=4)] = Field(1.0, description="Block count multiplier.")


class LowRankStudent(Spec):
    """The teacher with every linear and (ungrouped) conv weight W replaced by two smaller layers from its
    truncated SVD. Give exactly one of `rank` (the same for every layer, capped at the layer's full rank) or
    `energy` (per layer, the smallest rank keeping that fraction of sum(sigma^2)). A layer is left intact when
    its factorization would not have fewer parameters than W."""

    kind: Literal["low_rank"] = "low_rank"
    rank: Annotated[int, Field(ge=1, le=65_536)] | None = Field(
        None, description="Rank of every factorized layer (capped at the layer's full rank); give this or energy.")
    energy: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Per layer, the smallest rank keeping this fraction of sum(sigma^2); give this or rank.")

    @model_validator(mode="after")
    def _exactly_one_criterion(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of 'rank' or 'energy'")
        return self


MAX_LAYERS = 1024  # encoder layers a model may have (bounds the spec's numbers)


class LayersStudent(Spec):
    """The teacher with fewer encoder layers, initialised from its own weights (DistilBERT's student): the kept
    layers' weights and everything around them (embeddings, pooler, classifier) are copied from the teacher.
    Only for a Hugging Face folder upload (not with llm_ptq), whose config says the
    layer count (`num_hidden_layers`). A seq2seq-lm model's student keeps some of its decoder's layers (its
    `num_decoder_layers` or `decoder_layers`) and its whole encoder: generation runs the decoder once per token.
    Give exactly one of `keep` (how many layers, evenly spaced and always including the last: 3 of 6 keeps 1, 3,
    5; where the first layer lacks parts the others have, as ModernBERT's without an attention norm, it is kept too
    and the rest spaced over the later layers: 0, 3, 5) or `layers` (their indices, from 0). ALBERT, whose layers
    share one set of weights, takes `keep` alone: that many passes of its shared layer."""

    kind: Literal["layers"] = "layers"
    keep: Annotated[int, Field(ge=1, le=MAX_LAYERS)] | None = Field(
        None, description="How many encoder layers (a seq2seq-lm model's decoder layers) to keep (fewer than the "
                          "model has), evenly spaced, always including the last; give this or layers.")
    layers: Annotated[list[Annotated[int, Field(ge=0, lt=MAX_LAYERS)]], Field(min_length=1, max_length=MAX_LAYERS)] \
        | None = Field(None, description="Indices (from 0, increasing) of the encoder layers (a seq2seq-lm "
                                         "model's decoder layers) to keep; give this or keep.")

    @model_validator(mode="after")
    def _exactly_one_choice(self):
        if (self.keep is None) == (self.layers is None):
            raise ValueError("give exactly one of 'keep' (a number of layers) or 'layers' (their indices)")
        if self.layers is not None and any(b <= a for a, b in zip(self.layers, self.layers[1:])):
            raise ValueError(f"'layers' must be increasing indices without repeats, got {self.layers}")
        return self


def kept_layers(student: LayersStudent, teacher_layers: int, keep_first: bool = False) -> list[int]:
    """The indices of the teacher's layers the student keeps; ValueError saying why when the teacher has too few.
    `keep_first`: the teacher's first layer lacks parts the others have (ModernBERT's has no attention norm), so no
    other can stand in its place: a `keep` count keeps it, and the rest evenly spaced over the later layers."""
    if student.layers is not None:
        if len(student.layers) >= teacher_layers or student.layers[-1] >= teacher_layers:
            raise ValueError(f"a 'layers' student keeps fewer layers than the model's {teacher_layers}, with indices "
                             f"0..{teacher_layers - 1}; got layers {student.layers}")
        return list(student.layers)
    if student.keep >= teacher_layers:
        raise ValueError(f"a 'layers' student keeps fewer layers than the model has ({teacher_layers}); got keep "
                         f"{student.keep}")
    if keep_first:
        rest = kept_layers(LayersStudent(keep=student.keep - 1), teacher_layers - 1) if student.keep > 1 else []
        return [0, *(index + 1 for index in rest)]
    # Layer i of the student stands for the teacher's (i + 1) * n / k - 1, rounded half up: evenly spaced, ending
    # at the last layer (whose output the task reads).
    return [((index + 1) * teacher_layers * 2 + student.keep) // (2 * student.keep) - 1
            for index in range(student.keep)]


class InputStudent(Spec):
    """The model this stage receives is the student and the uploaded, uncompressed model is the teacher: how a
    pipeline distils an earlier stage's result (prune -> kd) back towards the original."""

    kind: Literal["input"] = "input"


StudentSpec = Annotated[Union[UploadedStudent, ZooStudent, LowRankStudent, LayersStudent, InputStudent],
                        Field(discriminator="kind")]


class FeaturePair(Spec):
    """Match an intermediate student value to a teacher one (MSE after a learned projection when widths differ).

    A name is either a module path of the model as it was before export (`model.named_modules()`, e.g.
    'layer2' or 'layer2.0.conv1': the output of the last operation run inside that module) or an FX node name of
    the exported graph (e.g. 'relu_3', as listed by `print(model.graph)`).
    """

    student: Name = Field(description="Module path or FX node name of the student's value.")
    teacher: Name = Field(description="Module path or FX node name of the teacher's value.")
    weight: Annotated[float, Field(gt=0, le=1e6)] = Field(1.0, description="Weight of this pair's MSE in the "
                                                                          "loss.")


class KDSpec(Spec):
    """Hinton distillation: loss = (1 - alpha) * output loss + alpha * CE(s, labels) + sum of feature losses, where
    the output loss fits the output kind: T^2 * KL(softmax(t/T) || softmax(s/T)) for logits, 1 - cosine for
    embeddings, binary cross-entropy for sigmoid outputs, MSE for hidden states. The stage's input model is the
    teacher; the result is the trained student, whose fidelity is reported before and after training."""

    method: Literal["kd"] = "kd"
    student: StudentSpec = Field(description="The model trained to mimic the teacher: 'zoo', 'low_rank', "
                                             "'layers' (Hugging Face folders), 'upload' or 'input' (see each "
                                             "kind).")
    loss: Literal["kl", "cosine", "mse", "bce", "bce_logits", "detection"] | None = Field(
        None, description="Output loss: 'kl' (temperature KL, class logits), 'cosine' or 'mse' (embeddings, hidden "
                          "states), 'bce' (sigmoid probabilities), 'bce_logits' (logits of independent labels: "
                          "binary cross-entropy against the teacher's sigmoid), 'detection' (an object "
                          "detector's class scores and boxes); null chooses it from the output "
                          "kind (evaluation.output_kind, or detected), 'bce_logits' for the logits of a "
                          "multi-label model (evaluation.multi_label, or 0/1 label matrices).")
    temperature: Annotated[float, Field(gt=0, le=100)] = Field(4.0, description="Softmax temperature T of the "
                                                                               "'kl' loss.")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="Weight of hard-label cross-entropy; "
                                                                       "needs labels in the training split.")
    features: list[FeaturePair] = Field([], max_length=16, description="Intermediate values matched besides the "
                                                                       "output (at most 16 pairs).")
    training: TrainingSpec = Field(TrainingSpec(), description="The student's optimizer loop.")


class AugmentSpec(Spec):
    """Views shared by teacher and student. Crop and flip apply to float inputs shaped [N, C, H, W]; mixup to every
    float input (images, features, embeddings), never to integer inputs such as token ids."""

    crop_padding: Annotated[int, Field(ge=0, le=64)] = Field(4, description="Zero padding before a random crop "
                                                                            "back to the input size; 0 disables.")
    flip: bool = Field(True, description="Random horizontal flips.")
    mixup_alpha: Annotated[float, Field(ge=0, le=10)] = Field(1.0, description="Beta(a, a) mixing ratio of each "
                                                                               "batch with itself rolled by one; "
                                                                               "0 disables mixup.")


class FunctionMatchingSpec(Spec):
    """Beyer et al. 2022 ("a good teacher is patient and consistent"): teacher and student see the same
    augmented view every step, KL at T=1, no labels; long schedules pay off. `teacher_targets='fixed'` is the
    baseline it beats: teacher outputs computed once per example on the clean input."""

    method: Literal["function_matching"] = "function_matching"
    student: StudentSpec = Field(description="The model trained to match the teacher: 'zoo', 'low_rank', "
                                             "'layers' (Hugging Face folders), 'upload' or 'input'.")
    augment: AugmentSpec = Field(AugmentSpec(), description="The views teacher and student share.")
    teacher_targets: Literal["consistent", "fixed"] = Field(
        "consistent", description="consistent: the teacher sees each augmented view; fixed: its outputs on the "
                                  "clean inputs, computed once (the baseline).")
    training: TrainingSpec = Field(TrainingSpec(), description="The student's optimizer loop (long schedules "
                                                               "pay off).")


class QuantizedDistillationSpec(Spec):
    """Polino et al. quantized distillation: the model trains with uniformly quantized weights in the forward
    pass (per-bucket min-max scaling, optional stochastic rounding), full-precision shadow weights take the
    straight-through gradient of the distillation loss from the teacher (the task's reference model)."""

    method: Literal["quantized_distillation"] = "quantized_distillation"
    bits: Annotated[int, Field(ge=2, le=8)] = Field(4, description="Bits of every quantized weight.")
    bucket_size: Annotated[int, Field(ge=1, le=65536)] = Field(256, description="Weights per scaling bucket "
                                                                                "(consecutive along each row).")
    stochastic_rounding: bool = Field(False, description="Round up or down at random in proportion to the "
                                                         "distance (unbiased), instead of to the nearest level.")
    temperature: Annotated[float, Field(gt=0, le=100)] = Field(2.0, description="Softmax temperature of the "
                                                                               "distillation loss.")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="Weight of hard-label cross-entropy.")
    skip: Patterns = Field([], description="Parameter names kept in full precision, e.g. 'fc.weight' (at most "
                                           "256).")
    training: TrainingSpec = Field(TrainingSpec(), description="The optimizer loop of the shadow weights.")


class DifferentiableQuantizationSpec(Spec):
    """Polino et al. differentiable quantization: each weight tensor is stored as b-bit indices into its own
    codebook of 2^b non-uniform points; the points start at quantiles of the weights and are learned by gradient
    descent on the distillation loss (each forward maps every weight to its nearest point, so a point's gradient
    is the sum of its members' gradients). Only the points train; everything else stays as it is."""

    method: Literal["differentiable_quantization"] = "differentiable_quantization"
    bits: Annotated[int, Field(ge=2, le=8)] = Field(4, description="Codebook of 2^bits points per weight tensor.")
    temperature: Annotated[float, Field(gt=0, le=100)] = Field(2.0, description="Softmax temperature of the "
                                                                               "distillation loss.")
    alpha: Annotated[float, Field(ge=0, le=1)] = Field(0.0, description="Weight of hard-label cross-entropy.")
    skip: Patterns = Field([], description="Parameter names kept in full precision (at most 256).")
    training: TrainingSpec = Field(TrainingSpec(lr=1e-4), description="The optimizer loop of the codebook "
                                                                      "points (lr 1e-4 unless given).")
