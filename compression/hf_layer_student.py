"""A distillation student made of some of a Hugging Face folder's own encoder layers (DistilBERT's recipe), for
folder jobs (issue 10).

The upload's model is loaded with transformers as `compression.hf_program` loads it (local files, safetensors, no
remote code); a model of the same class is built from its config with `num_hidden_layers` set to the number kept
(and `layer_types`, where a config lists one entry per layer, cut the same way), and every tensor is copied from
the upload: the kept layers' under their new indices, everything else (embeddings, pooler, classifier) as it is.

The student is written as a folder of its own, with the upload's tokenizer and sentence-transformers files beside
it, so that it becomes a program exactly as the upload did (the same wrapper and sentence pooling), the `kd` stage
gets it as an uploaded student, and the stages' Hugging Face folders are written against it (a config with the
student's layer count, which `from_pretrained` loads).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compression.archive.hf_architectures import SEQ2SEQ_TASKS, decoder_student
from compression.archive.hf_folder import (
    DECODER_LAYER_FIELDS,
    copy_side_files,
    decoder_layer_place,
    layer_count_section,
)
from compression.archive.sentence_transformers import SentenceEmbedding
from compression.dry_run import DryRunFailed
from compression.hf_program import load_folder_model, model_program
from compression.io import save_program
from compression.shared_layer_student import shared_layer_student
from compression.specs.distill import LayersStudent, kept_layers
from compression.students import layers_student_id, parameter_count

LAYER_COUNT_FIELD = "num_hidden_layers"
# Config lists with one entry per layer (Qwen2's and Gemma2's sliding or full attention, GPT-Neo's expanded
# `attention_layers`, Longformer's and LED's window per layer; the blocks and heads of each of Swin2SR's stages,
# `depths` and `num_heads`), and any other `*layer_types` list (Mellum's and Cohere2-MoE's dense or sparse MLP per
# layer, `mlp_layer_types`).
PER_LAYER_FIELDS = ("layer_types", "attention_layers", "attention_window", "depths", "num_heads")
PER_LAYER_SUFFIX = "layer_types"


def layer_config(config):
    """The config that holds `num_hidden_layers`: the model's own, else its sub-config that does
    (`layer_count_section`: a CTC recognizer's encoder or audio tower); the model's own when none does."""
    if isinstance(getattr(config, LAYER_COUNT_FIELD, None), int):
        return config
    section = layer_count_section(config.to_dict())
    return getattr(config, section) if section else config


def layer_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The names and modules of the model's lists of encoder layers: the `nn.ModuleList`s as long as the config's
    `num_hidden_layers`; one in most architectures, or several siblings holding each layer's parts (XLM's
    attentions, layer_norm1, ffns, layer_norm2), which a student keeps at the same indices."""
    count = getattr(layer_config(model.config), LAYER_COUNT_FIELD, None)
    if not isinstance(count, int):
        raise ValueError(f"a 'layers' student needs the folder's config to give num_hidden_layers; this "
                         f"{model.config.model_type} config does not")
    stacks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.ModuleList) and len(module) == count]
    # lists inside a layer that happen to be as long (T5's block.0.layer: attention and MLP, in a 2-layer model)
    stacks = [(name, module) for name, module in stacks
              if not any(name.startswith(f"{outer}.") for outer, _ in stacks)]
    if len({name.rpartition(".")[0] for name, _ in stacks}) > 1:
        # lists of other parts that happen to be as long (a tiny wav2vec2's two feature-encoder convolutions beside
        # its two transformer layers): the layers a student keeps are the ones that attend
        stacks = [(name, module) for name, module in stacks if _attends(module[0])] or stacks
    parents = {name.rpartition(".")[0] for name, _ in stacks}
    if not stacks or len(parents) != 1:
        raise ValueError(f"a 'layers' student needs one list of {count} layers (or sibling lists of their parts) in "
                         f"the {type(model).__name__} model; found {[name for name, _ in stacks] or 'none'}")
    return stacks


def _attends(layer: nn.Module) -> bool:
    return any("attention" in type(module).__name__.lower() for module in layer.modules())


def decoder_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """An encoder-decoder's list of decoder layers (`decoder.block` of T5, `model.decoder.layers` of BART), as
    long as its config's decoder layer count: what a seq2seq-lm or speech-seq2seq model's 'layers' student keeps
    some of. Generation runs the decoder once per written token and the encoder once per text (or recording), so
    the decoder is what a smaller student saves time on (DistilBART's and Distil-Whisper's students keep the
    encoder whole)."""
    holder, field = decoder_layer_holder(model.config)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if field is None or decoder is None:
        fields = " or ".join(DECODER_LAYER_FIELDS)
        raise ValueError(f"a 'layers' student of an encoder-decoder keeps some of its decoder's layers, and this "
                         f"{model.config.model_type} config gives no decoder layer count ({fields}); use a "
                         "'low_rank' or uploaded student")
    count = getattr(holder, field)
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    # (the decoder's own list; SpeechT5's holds it one module down, `wrapped_decoder.layers`)
    stacks = [(f"{prefix}.{name}", module) for name, module in decoder.named_modules()
              if name and isinstance(module, nn.ModuleList) and len(module) == count]
    stacks = [(name, module) for name, module in stacks if not any(name.startswith(f"{outer}.")
                                                                   for outer, _ in stacks)]
    if len(stacks) != 1:
        raise ValueError(f"a 'layers' student needs one list of the decoder's {count} layers in the "
                         f"{type(model).__name__} model; found {[name for name, _ in stacks] or 'none'}")
    return stacks


def decoder_layer_holder(config):
    """The config object that holds an encoder-decoder's decoder layer count (the config, or a
    VisionEncoderDecoderModel's nested decoder config) and the field (`decoder_layer_place`); field None where none
    does."""
    section, field = decoder_layer_place(config.to_dict())
    return (getattr(config, section) if section else config), field


# A DETR-style detector's decoder layer count, and its heads at every decoder layer (Deformable DETR's box
# refinement, RT-DETR's and D-FINE's class and box heads), in lists parallel to the layers that a student cuts
# with them.
DETECTOR_DECODER_FIELD = "decoder_layers"
PER_LAYER_HEADS = ("class_embed", "bbox_embed")


def detector_decoder_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """A detector's list of decoder layers (`model.decoder.layers`) and the per-layer head lists beside it, each
    as long as the config's `decoder_layers`: what an object-detection model's 'layers' student keeps some of."""
    count = getattr(model.config, DETECTOR_DECODER_FIELD, None)
    if type(count) is not int:
        raise ValueError(f"a 'layers' student of an object detector keeps some of its decoder's layers, and this "
                         f"{model.config.model_type} config gives no decoder_layers (YOLOS is an encoder alone); "
                         "use a 'low_rank' or uploaded student")
    stacks = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.ModuleList) and len(module) == count
              and (name.endswith("decoder.layers") or name.rpartition(".")[2] in PER_LAYER_HEADS)]
    if sum(name.endswith("decoder.layers") for name, _ in stacks) != 1:
        raise ValueError(f"a 'layers' student needs one list of the decoder's {count} layers in the "
                         f"{type(model).__name__} model; found {[name for name, _ in stacks] or 'none'}")
    return stacks


def _renumbered(state: dict[str, torch.Tensor], prefix: str, kept: list[int]) -> dict[str, torch.Tensor]:
    """The teacher's tensors under the student's names: layer kept[i] becomes layer i, the dropped ones go."""
    new_index = {old: new for new, old in enumerate(kept)}
    renamed = {}
    for name, tensor in state.items():
        if not name.startswith(f"{prefix}."):
            renamed[name] = tensor
            continue
        index, _, rest = name.removeprefix(f"{prefix}.").partition(".")
        if int(index) in new_index:
            renamed[f"{prefix}.{new_index[int(index)]}.{rest}"] = tensor
    return renamed


# A head that reads the outputs of chosen layers (BEiT's and data2vec-vision's segmentation decoder, DPT's neck):
# their numbers, and the number of the first layer's output (out_indices 1-based, hidden_states[0] being the
# embeddings; DPT's backbone_out_indices 0-based).
FEATURE_LAYER_FIELDS = {"out_indices": 1, "backbone_out_indices": 0}


def _renumber_feature_layers(config, teacher_config, kept: list[int]) -> None:
    """Point a head's feature layers at the student's: the output of teacher layer L becomes that of the last kept
    layer at or before it. ValueError where one would have none, or two the same (too few layers kept)."""
    for field, base in FEATURE_LAYER_FIELDS.items():
        chosen = getattr(teacher_config, field, None)
        if not isinstance(chosen, (list, tuple)) or not all(type(index) is int for index in chosen):
            continue
        before = [sum(1 for layer in kept if layer <= index - base) for index in chosen]
        if 0 in before or len(set(before)) < len(before):
            raise ValueError(f"the model's head reads the outputs of layers {list(chosen)} ({field}), and the kept "
                             f"layers {kept} leave it {len(set(before) - {0})} distinct ones: keep a layer in each "
                             "stretch up to those (or distill into a 'low_rank' or uploaded student)")
        setattr(config, field, [count - 1 + base for count in before])


def first_layer_lacks_parts(stacks: list[tuple[str, nn.ModuleList]]) -> bool:
    """Whether a stack's first layer lacks tensors its last one has (ModernBERT's first layer has no attention
    norm, as the embeddings' norm comes just before it; DeepSeek-V3's first layers have a dense MLP where the others
    have experts): then no other layer can be a student's first layer. A first layer that only holds more (T5's
    and WavLM's relative position table, which every layer reads) lends those to whichever layer comes first."""
    return any(len(layers) > 1 and set(layers[-1].state_dict()) - set(layers[0].state_dict())
               for _, layers in stacks)


def write_layers_student(source: Path, task: str, spec: LayersStudent, destination: Path,
                         prompts: list[str] | None = None) -> dict:
    """Write the student of `spec` as a Hugging Face folder at `destination`; returns what it is made of (the
    kept layers, the teacher's count, parameters). ValueError when the folder's model has no such layers or too
    few of them. `prompts`: a zero-shot image classifier's candidate texts."""
    teacher = load_folder_model(source, task, prompts=prompts).model
    decoder = decoder_student(task, teacher.config.model_type)
    shared = None if decoder else shared_layer_student(teacher, spec)
    student, details = shared or _cut_student(teacher, task, spec)
    if getattr(teacher, "generation_config", None) is not None:  # BART's forced tokens, T5's start token
        student.generation_config = copy.deepcopy(teacher.generation_config)
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    copy_side_files(source, destination)
    student.save_pretrained(destination)
    return {"kind": "layers", **details, "parameters": parameter_count(student),
            "teacher_parameters": parameter_count(teacher)}


def _cut_student(teacher: nn.Module, task: str, spec: LayersStudent) -> tuple[nn.Module, dict]:
    """The teacher with the layers `spec` keeps (its config's layer count set), their weights and everything
    around them copied; and its description (the kept layers, the teacher's count, the lists cut)."""
    config = copy.deepcopy(teacher.config)
    if task in SEQ2SEQ_TASKS:  # the decoder's layers, its count under the decoder's own field
        stacks, (holder, field) = decoder_stacks(teacher), decoder_layer_holder(config)
    elif decoder_student(task, config.model_type):  # a detector's decoder layers and the heads it has at each
        stacks, holder, field = detector_decoder_stacks(teacher), config, DETECTOR_DECODER_FIELD
    else:
        stacks, holder, field = layer_stacks(teacher), layer_config(config), LAYER_COUNT_FIELD
    count = len(stacks[0][1])
    kept = kept_layers(spec, count, keep_first=first_layer_lacks_parts(stacks))
    try:
        setattr(holder, field, len(kept))
    except (AttributeError, NotImplementedError) as exc:  # Funnel's count is the sum of its `block_sizes`
        raise ValueError(f"a 'layers' student sets the config's {field}, which this "
                         f"{config.model_type} config derives from other fields and refuses ({exc}); distill into "
                         "a 'low_rank' or 'zoo' student, or prune") from None
    # (an encoder-decoder's per-layer lists, LED's attention windows, are its encoder's: its decoder is cut)
    per_layer = [] if decoder_student(task, config.model_type) else [
        *PER_LAYER_FIELDS, *(name for name in holder.to_dict()
                             if name.endswith(PER_LAYER_SUFFIX) and name not in PER_LAYER_FIELDS)]
    for name in per_layer:
        value = getattr(holder, name, None)
        if isinstance(value, list) and len(value) == count:
            setattr(holder, name, [value[index] for index in kept])
    if isinstance(getattr(config, "attention_types", None), list) and isinstance(config.attention_layers, list):
        # GPT-Neo rebuilds `attention_layers` from its run-length form ([[["global", "local"], 12]]) when loaded
        config.attention_types = [[config.attention_layers, 1]]
    if isinstance(getattr(config, "stage_names", None), list):
        # A backbone config (DINOv2, BEiT) names a stage per layer and picks its outputs among them: the student's
        # are its own (the teacher's last stage is not among them, and such a folder would not load).
        config.stage_names = ["stem", *(f"stage{index}" for index in range(1, len(kept) + 1))]
        config.out_features = None  # transformers' default: the last stage
    if task == "semantic-segmentation":  # (other heads of these models read no chosen layers)
        _renumber_feature_layers(config, teacher.config, kept)
    try:
        student = type(teacher)(config).eval()
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - RWKV's layer init divides by (layers - 1): one layer cannot be built
        raise ValueError(f"transformers cannot build this {teacher.config.model_type} model with {len(kept)} "
                         f"layer(s) ({type(exc).__name__}: {str(exc)[:200]}); keep more layers or use a "
                         "'low_rank' or uploaded student") from exc
    teacher_state = state = teacher.state_dict()
    for prefix, _ in stacks:
        state = _renumbered(state, prefix, kept)
    # A table only the first layer holds and every layer reads (T5's relative position bias, computed in layer 0
    # and passed on) comes from the teacher's first layer when the student's first layer is another one.
    firsts = tuple(f"{prefix}.0." for prefix, _ in stacks)
    state |= {name: teacher_state[name] for name in set(student.state_dict()) - set(state)
              if name.startswith(firsts) and name in teacher_state}
    differing = sorted(set(state) ^ set(student.state_dict()))
    if differing:
        # ModernBERT's first layer has no attention norm: another layer cannot take its place.
        raise ValueError(f"the kept layers {kept} of this {teacher.config.model_type} model do not have the structure "
                         f"of the student's layers at their new places (tensors {differing[:4]} differ); keep "
                         "the layers whose structure differs (e.g. layer 0) with 'layers': [0, ...]")
    student_shapes = {name: tensor.shape for name, tensor in student.state_dict().items()}
    resized = sorted(name for name, tensor in state.items() if tensor.shape != student_shapes[name])
    if resized:
        # ESM's contact head reads every layer's attention maps: its width follows the layer count.
        raise ValueError(f"this {teacher.config.model_type} model has tensors whose shape depends on the number of "
                         f"layers ({', '.join(f'{name} {list(state[name].shape)}' for name in resized[:3])} would be "
                         f"{', '.join(str(list(student_shapes[name])) for name in resized[:3])} with {len(kept)} "
                         "layers), which a 'layers' student cannot copy from the teacher; use a 'low_rank' or "
                         "uploaded student")
    student.load_state_dict(state, strict=True)
    return student, {"layers": kept, "teacher_layers": count, "layer_list": ", ".join(prefix for prefix, _ in stacks)}


@dataclass
class LayerStudents:
    """The job's stages with every 'layers' student resolved to its layer indices, and what was built for them."""

    stages: list
    programs: dict[str, Path] = field(default_factory=dict)  # student model id -> .pt2 (run_pipeline's uploads)
    folders: dict[int, Path] = field(default_factory=dict)  # stage index -> the student's folder
    details: dict[int, dict] = field(default_factory=dict)  # stage index -> write_layers_student's description

    def source_folders(self, upload: Path) -> list[Path]:
        """Per stage, the folder its model's graph comes from: the student's from a 'layers' stage on, else the
        upload's."""
        current, sources = upload, []
        for index in range(len(self.stages)):
            current = self.folders.get(index, current)
            sources.append(current)
        return sources

    def add_details(self, result) -> None:
        """Put each student's description into its stage's metrics (`method_metrics.student_spec`)."""
        for index, details in self.details.items():
            if index < len(result.stages):
                result.stages[index].metrics.get("method_metrics", {}).setdefault("student_spec", {}).update(details)


def build_layer_students(stages: list, source: Path, task: str, example: tuple[torch.Tensor, ...],
                         embedding: SentenceEmbedding | None, workdir: Path,
                         prompts: list[str] | None = None) -> LayerStudents:
    """For each stage whose student is 'layers': its folder under `workdir/<index>/` and its program (with the
    upload program's output: `embedding` pooled when given, a zero-shot classifier's scores of `prompts`),
    exported on `example`."""
    built = LayerStudents(list(stages))
    for index, spec in enumerate(stages):
        student = getattr(spec, "student", None)
        if not isinstance(student, LayersStudent):
            continue
        folder = workdir / str(index) / "folder"
        try:
            details = write_layers_student(source, task, student, folder, prompts)
        except ValueError as exc:  # said as the dry run says it: seconds into the job, before any evaluation
            raise DryRunFailed(f"dry run: stage {index} ({spec.method}) cannot run on this model: {exc}") from exc
        resolved = LayersStudent(layers=details["layers"])
        program = save_program(model_program(load_folder_model(folder, task, embedding, prompts=prompts), example),
                               workdir / str(index) / "student.pt2")
        built.stages[index] = spec.model_copy(update={"student": resolved})
        built.programs[layers_student_id(resolved)] = program
        built.folders[index] = folder
        built.details[index] = details
    return built
