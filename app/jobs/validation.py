"""Refuse at submission a job that is bound to fail, with a message that says what to fix."""

from __future__ import annotations

from dataclasses import replace

from app.core.errors import InvalidInput
from compression.archive.choices import CHOICES, CHOICES_NEED_MULTIPLE_CHOICE, MULTIPLE_CHOICE_NEEDS_CHOICES
from compression.archive.hf_architectures import (
    ARRAY_TASKS,
    AUDIO_TASKS,
    CANDIDATE_LABEL_TASKS,
    DECODER_INPUT,
    IMAGE_MATTING,
    IMAGE_TASKS,
    LABELS_NEED_ZERO_SHOT,
    MULTIPLE_CHOICE,
    SEQ2SEQ_TASKS,
    TOO_MANY_TO_TRANSCRIBE,
    TRANSCRIBING_TASKS,
    TRANSCRIPTS_NEED_A_TOKENIZER,
    TRIMAP_CHANNELS,
    UNLABELLED_ARRAY_TASKS,
    VIDEO_CLASSIFICATION,
    ZERO_SHOT_DETECTION,
    ZERO_SHOT_IMAGES,
    decoder_student,
    one_shape_problem,
    unlabelled_task_problem,
)
from compression.archive.hf_folder import DECODER_LAYER_FIELDS
from compression.archive.jsonl import (
    ANSWERS_NEED_A_READER,
    ANSWERS_NOT_READ,
    MASKED_LM_READS_TEXT,
    MAX_WRITTEN_ROWS,
    PAIR_INPUT,
    PAIRS_NOT_FOR_CAUSAL_LM,
    PAIRS_NOT_FOR_SEQ2SEQ,
    SEQ2SEQ_READS_TARGETS,
    TARGET,
    TARGETS_NEED_SEQ2SEQ,
    TEXT_INPUT,
    TOO_MANY_TO_WRITE,
)
from compression.archive.npz import IGNORED_LABEL, MASK_IGNORE_INDEX, TRANSCRIPT_ARRAY, is_multi_hot
from compression.archive.pixel_scaling import NO_PROCESSOR, PIXEL_DTYPE, PixelScaling, pixel_layout
from compression.archive.time_series import SERIES_DATASET, TIME_SERIES_TASKS
from compression.inspect import (
    LABEL_ARRAY,
    DatasetManifest,
    InvalidUpload,
    ModelSignature,
    adds_channel_dim,
    bind_inputs,
)
from compression.specs.batch_bound import batch_bound_problems
from compression.specs.distill import kept_layers
from compression.specs.ipq import quant_noise_label_problem
from compression.specs.llm import ASYMMETRIC_EXPERTS, LLM_PTQ_ALONE
from compression.specs.metrics import BOX, DETECTIONS_SHAPE, metric_problem
from compression.specs.order import order_problems
from compression.specs.student_fit import zoo_student_problems
from compression.specs.training import TrainingSpec
from compression.text_labels import ModelClasses, label_problems
from core.jobs.spec import JobCreate


def splits_used(spec: JobCreate) -> set[str]:
    """Every split the job will read: the evaluation split, any `*_split` field of a stage, and the train split
    of every stage that trains."""
    used = {spec.evaluation.split}
    for stage in spec.stages:
        for field_name in type(stage).model_fields:
            if field_name.endswith("split") and isinstance(getattr(stage, field_name), str):
                used.add(getattr(stage, field_name))
            if isinstance(getattr(stage, field_name), TrainingSpec):
                used.add(spec.train_split)
        if getattr(stage, "needs_calibration", False):
            used.add(spec.train_split)
    return used


def _fields_naming(spec: JobCreate, split: str) -> list[str]:
    """The spec fields (defaults included) that name `split`: what the user changes when it is missing."""
    fields = [name for name, value in (("evaluation.split", spec.evaluation.split), ("train_split", spec.train_split))
              if value == split]
    fields += [f"stages.{index}.{name}" for index, stage in enumerate(spec.stages) for name in type(stage).model_fields
               if name.endswith("split") and getattr(stage, name) == split]
    return fields


def validate_job(spec: JobCreate, signature: ModelSignature, manifest: DatasetManifest,
                 folder: dict | None = None) -> None:
    """`folder`: the facts of a Hugging Face folder upload (the signature's "hf"), None for a .pt2."""
    if folder and folder.get("task") in ARRAY_TASKS:  # an .npz job: the head's config says what it outputs
        spec = spec.model_copy(update={"evaluation": spec.evaluation.declared_by_head(folder.get("classes"))})
    if folder and folder.get("task") in ("object-detection", ZERO_SHOT_DETECTION) and \
            spec.evaluation.output_kind is None:
        spec = spec.model_copy(update={"evaluation": spec.evaluation.model_copy(update={"output_kind": "detections"})})
    if folder and folder.get("task") in ARRAY_TASKS and folder.get("task") in SEQ2SEQ_TASKS:
        # The .npz gives the audio or images alone: the worker makes the decoder's input from the reference texts
        # (or from what the upload writes).
        signature = replace(signature, inputs=[t for t in signature.inputs if t.name != DECODER_INPUT])
    choice_counts = {arrays[CHOICES]["shape"][1] for arrays in manifest.splits.values() if CHOICES in arrays}
    if folder and folder.get("task") == MULTIPLE_CHOICE and len(choice_counts) == 1:
        # a logit per choice: the classes its labels index
        logits = replace(signature.outputs[0], shape=[None, *choice_counts])
        signature = replace(signature, outputs=[logits, *signature.outputs[1:]])
    if folder and folder.get("task") == ZERO_SHOT_IMAGES and spec.evaluation.candidate_labels:
        # one score per candidate label: the classes its labels index
        scores = replace(signature.outputs[0], shape=[None, len(spec.evaluation.candidate_labels)])
        signature = replace(signature, outputs=[scores, *signature.outputs[1:]])
    if folder and folder.get("task") == ZERO_SHOT_DETECTION and spec.evaluation.candidate_labels:
        # each patch's score per query, then its box
        detections = replace(signature.outputs[0], shape=[None, None, len(spec.evaluation.candidate_labels) + 4])
        signature = replace(signature, outputs=[detections, *signature.outputs[1:]])
    problems = _fixed_batch_problems(signature.inputs)
    problems += order_problems([stage.method for stage in spec.stages])
    problems += batch_bound_problems(spec.stages, signature.max_batch)
    problems += _student_problems(spec, signature)
    kind_problems = _model_kind_problems(spec, manifest, folder)
    if kind_problems:  # the per-split checks below would only repeat them in other words
        raise InvalidInput("; ".join(problems + kind_problems))
    available = sorted(manifest.splits)
    # A causal LM's general-path job labels every split with each position's next token (its rows' own labels
    # are not read): llm_ptq reads the text alone.
    # A seq2seq-lm (speech-seq2seq) job's labels are its targets' (transcripts') tokens, or those the upload writes
    # where a split has none.
    # A fill-mask job's labels are the tokens the worker masks in the text (`compression.masked_tokens`).
    next_tokens = bool(folder) and (folder.get("task") in (*SEQ2SEQ_TASKS, "fill-mask")
                                    or folder.get("task") == "causal-lm"
                                    and "llm_ptq" not in {stage.method for stage in spec.stages})

    def labelled(split: str) -> bool:
        return next_tokens or manifest.has_labels(split)

    for split in sorted(splits_used(spec)):
        if split not in manifest.splits:
            problems.append(f"split '{split}' is not in the dataset (it has {available}); set "
                            f"{' and '.join(_fields_naming(spec, split))} to one of these")
            continue
        if manifest.format == "npz":
            problems += _check_split(split, signature, manifest, spec, folder or {})
        elif manifest.has_labels(split) and not next_tokens:  # text: the tokenizer makes the inputs; labels fit
            problems += _check_text_labels(split, manifest, signature, spec, folder or {})
    problems += _one_shape_problems(spec, signature, manifest, folder)
    problems += _metric_problems(spec, manifest, labelled)
    problems += _score_metric_problems(spec, signature)
    problems += _detection_output_problems(spec, signature)
    problems += [problem for stage in spec.stages if stage.method == "quant_noise" and spec.train_split in
                 manifest.splits and (problem := quant_noise_label_problem(stage, spec.train_split,
                                                                           labelled(spec.train_split)))]
    if problems:
        raise InvalidInput("; ".join(problems))


def _one_shape_problems(spec: JobCreate, signature: ModelSignature, manifest: DatasetManifest,
                        folder: dict | None) -> list[str]:
    """An image or audio folder's program is exported at the shape of the dataset's rows, its batch alone dynamic:
    splits of a waveform model whose waveforms differ in length (or images of a convolutional network in size)
    would fail in the worker's first stage on the split it was not exported at."""
    if (not folder or folder.get("task") not in ARRAY_TASKS or manifest.format != "npz"
            or not any(None in t.shape[1:] for t in signature.inputs)):
        return []
    shapes = {}
    for split in sorted(splits_used(spec) & set(manifest.splits)):
        try:
            binding = bind_inputs([t.name for t in signature.inputs], list(manifest.splits[split]), split)
        except InvalidUpload:
            continue  # said by the split's own check
        arrays = [manifest.splits[split][binding[t.name]] for t in signature.inputs]
        if any(array["dtype"].lstrip("<>=|") in (PIXEL_DTYPE, "u1") for array in arrays):
            return []  # uint8 images: brought to one size by the folder's processor in the worker, where it resizes
        shapes[split] = [array["shape"][1:] for array in arrays]
    problem = one_shape_problem(shapes)
    return [problem] if problem else []


def _metric_problems(spec: JobCreate, manifest: DatasetManifest, labelled) -> list[str]:
    """The chosen metric must fit the declared output kind (a detected one is only known in the worker) and the
    labels of the evaluation split (`labelled(split)`); rank agreement of similarities needs at least 3 examples
    to rank."""
    evaluation, split = spec.evaluation, spec.evaluation.split
    if split not in manifest.splits:
        return []
    if evaluation.output_kind is not None or evaluation.metric == "accuracy":
        problem = metric_problem(evaluation.metric, evaluation.output_kind, labelled(split))
        if problem:
            return [f"evaluation.{problem}"]
    elif evaluation.metric == "label_spearman" and manifest.format == "npz":
        return ["evaluation.metric 'label_spearman' ranks a regression model's outputs against the values it is "
                "labelled with: set evaluation.output_kind to 'regression'"]
    examples = min((meta["shape"][0] for meta in manifest.inputs(split).values() if meta["shape"]), default=0)
    if evaluation.metric in ("similarity_spearman", "score_spearman", "label_spearman") and \
            min(examples, evaluation.max_samples or examples) < 3:
        return [f"evaluation.metric '{evaluation.metric}' ranks examples: split '{split}' needs at least 3 examples "
                "(and max_samples at least 3)"]
    return []


def _score_metric_problems(spec: JobCreate, signature: ModelSignature) -> list[str]:
    """'score_spearman' ranks one score per example: the model's first output must be [batch] or [batch, 1] (or
    [batch, K] of a regression model, whose K targets are ranked one by one)."""
    output = signature.outputs[0] if signature.outputs else None
    # A regression model's targets are each ranked on their own, however many there are.
    if spec.evaluation.metric != "score_spearman" or output is None or spec.evaluation.output_kind == "regression":
        return []
    if _one_per_example(output):
        return []
    return [f"evaluation.metric 'score_spearman' ranks one score per example, but the model output is "
            f"{output.describe()}; it fits a model with one output (a reranker, a regression head or a binary "
            "classifier's logit)"]


def _detection_output_problems(spec: JobCreate, signature: ModelSignature) -> list[str]:
    """'detections' outputs are [batch, queries, classes + 4] (`compression.detection`)."""
    output = signature.outputs[0] if signature.outputs else None
    if spec.evaluation.output_kind != "detections" or output is None or not output.shape:
        return []
    last = output.shape[-1]
    if len(output.shape) == 3 and (last is None or last > BOX):
        return []
    return [f"evaluation.output_kind: {DETECTIONS_SHAPE}, but the model output is {output.describe()}"]


def _student_problems(spec: JobCreate, signature: ModelSignature) -> list[str]:
    """A zoo student must take the model's input and give its output shape (a stage after one that swapped the
    model for a student gets that student's shapes, which are the same by construction)."""
    problems = []
    inputs = [(t.shape, is_float_dtype(t.dtype)) for t in signature.inputs]
    outputs = [t.shape for t in signature.outputs]
    for index, stage in enumerate(spec.stages):
        student = getattr(stage, "student", None)
        if getattr(student, "kind", None) == "zoo":
            problems += [f"stages.{index}.student: {problem}"
                         for problem in zoo_student_problems(student.architecture, inputs, outputs)]
    return problems


def _model_kind_problems(spec: JobCreate, manifest: DatasetManifest, folder: dict | None) -> list[str]:
    """What runs on what: `llm_ptq` only on a causal-lm folder, and alone (the other methods run on the folder's
    exported program); a folder only with text, and text only with a folder's tokenizer."""
    methods = [stage.method for stage in spec.stages]
    problems = _layers_student_problems(spec, folder)
    zero_shot = bool(folder) and folder["task"] in CANDIDATE_LABEL_TASKS
    if zero_shot and not spec.evaluation.candidate_labels:
        problems.append(CANDIDATE_LABEL_TASKS[folder["task"]])
    if not zero_shot and spec.evaluation.candidate_labels:
        problems.append(LABELS_NEED_ZERO_SHOT)
    if folder is None:
        if "llm_ptq" in methods:
            problems.append("llm_ptq quantizes a causal language model uploaded as a Hugging Face folder "
                            "(task causal-lm); this model is a .pt2 program")
        if manifest.format == "jsonl":
            problems.append("a .jsonl text dataset needs a Hugging Face folder model, whose tokenizer turns the "
                            "text into its inputs; for a .pt2 model upload an .npz of the tokenized arrays "
                            "(<split>.input_ids, <split>.attention_mask, ...)")
        return problems
    task = folder["task"]
    if task != "causal-lm":
        if "llm_ptq" in methods:
            problems.append(f"llm_ptq quantizes a causal language model; this folder's task is {task} (use ptq, "
                            "qat, kd, prune, ... on it)")
    else:
        if any(PAIR_INPUT in arrays for arrays in manifest.splits.values()):
            problems.append(PAIRS_NOT_FOR_CAUSAL_LM)
        if "llm_ptq" in methods and set(methods) != {"llm_ptq"}:
            problems.append(LLM_PTQ_ALONE)
        elif "llm_ptq" in methods:
            problems += _position_problems(spec, folder.get("max_positions"))
            if folder.get("per_expert_tensors"):
                problems += [f"stages.{index}.symmetric: {ASYMMETRIC_EXPERTS}" for index, stage in
                             enumerate(spec.stages) if not stage.is_symmetric]
    if task in ("object-detection", ZERO_SHOT_DETECTION) and spec.evaluation.output_kind not in (None, "detections"):
        problems.append(f"{_a(task)} folder's outputs are detections (a score per class and a box per object "
                        f"query or patch), not '{spec.evaluation.output_kind}': leave evaluation.output_kind unset")
    if task in ARRAY_TASKS:
        if manifest.format != "npz":
            what = ("uint8 clips [N, frames, H, W, 3], or the pixel_values its video processor makes"
                    if task == VIDEO_CLASSIFICATION else "uint8 images (ViTMatte's with their trimap as a fourth "
                    "channel, [N, H, W, 4]), or the pixel_values its image processor makes" if task == IMAGE_MATTING
                    else "uint8 images, or the pixel_values its image processor makes" if task in IMAGE_TASKS
                    else SERIES_DATASET if task in TIME_SERIES_TASKS
                    else "the waveforms at its feature extractor's sampling rate, or the spectrogram features a "
                    "spectrogram model takes")
            unlabelled = task in UNLABELLED_ARRAY_TASKS
            labels = "" if unlabelled else "; <split>.y labels where known"
            problems.append(f"{_a(task)} folder takes an .npz per split "
                            f"(<split>.x: {what}{labels}), not text")
        labelled = sorted(split for split in manifest.splits if manifest.has_labels(split))
        if task in UNLABELLED_ARRAY_TASKS and labelled:
            problems.append(unlabelled_task_problem(task, [f"{split}.y" for split in labelled]))
        transcribed = [f"{split}.{TRANSCRIPT_ARRAY}" for split, arrays in sorted(manifest.splits.items())
                       if TRANSCRIPT_ARRAY in arrays]
        if task in TRANSCRIBING_TASKS and transcribed and not folder.get("has_tokenizer"):
            problems.append(TRANSCRIPTS_NEED_A_TOKENIZER.format(arrays=transcribed))
        if task in SEQ2SEQ_TASKS:
            problems += [TOO_MANY_TO_TRANSCRIBE.format(split=split, rows=rows)
                         for split, arrays in sorted(manifest.splits.items()) if TRANSCRIPT_ARRAY not in arrays
                         and (rows := max((meta["shape"][0] for meta in manifest.inputs(split).values()
                                           if meta["shape"]), default=0)) > MAX_WRITTEN_ROWS]
    elif manifest.format != "jsonl":
        problems.append("a Hugging Face folder takes a .jsonl text dataset of {\"split\": ..., \"text\": ...} "
                        "rows, tokenized with the folder's own tokenizer")
    elif not folder.get("has_tokenizer"):
        problems.append("the model folder has no tokenizer files (tokenizer.json, vocab files), which the .jsonl "
                        "text needs; upload the folder with its tokenizer")
    else:
        problems += _target_problems(task, manifest)
        chosen = sorted(split for split, arrays in manifest.splits.items() if CHOICES in arrays)
        if task != MULTIPLE_CHOICE and chosen:
            problems.append(f"splits {chosen}: {CHOICES_NEED_MULTIPLE_CHOICE}")
        if task == MULTIPLE_CHOICE and not chosen:  # (a file gives choices in every row or in none)
            problems.append(MULTIPLE_CHOICE_NEEDS_CHOICES)
        if task == "fill-mask" and (labelled := sorted(s for s in manifest.splits if manifest.has_labels(s))):
            problems.append(f"splits {labelled}: {MASKED_LM_READS_TEXT}")
    return problems


def _target_problems(task: str, manifest: DatasetManifest) -> list[str]:
    """A .jsonl's `target` texts are what a seq2seq-lm model writes; such a model is labelled by nothing else, and
    reads one text per row."""
    targeted = sorted(split for split, arrays in manifest.splits.items() if TARGET in arrays)
    if task != "seq2seq-lm":
        return [f"splits {targeted}: {TARGETS_NEED_SEQ2SEQ}"] if targeted else []
    problems = []
    if labelled := sorted(split for split in manifest.splits if manifest.has_labels(split)):
        problems.append(f"splits {labelled}: {SEQ2SEQ_READS_TARGETS}")
    if any(PAIR_INPUT in arrays for arrays in manifest.splits.values()):
        problems.append(PAIRS_NOT_FOR_SEQ2SEQ)
    problems += [TOO_MANY_TO_WRITE.format(split=split, rows=rows) for split, arrays in sorted(manifest.splits.items())
                 if TARGET not in arrays and (rows := arrays[TEXT_INPUT]["shape"][0]) > MAX_WRITTEN_ROWS]
    return problems


def _layers_student_problems(spec: JobCreate, folder: dict | None) -> list[str]:
    """A 'layers' student is cut from a Hugging Face folder's encoder layers, fewer than it has (config.json's
    num_hidden_layers); a folder uploaded before its layer count was recorded is checked when the job starts."""
    problems = []
    for index, stage in enumerate(spec.stages):
        student = getattr(stage, "student", None)
        if getattr(student, "kind", None) != "layers":
            continue
        where = f"stages.{index}.student"
        if folder is None:
            problems.append(f"{where}: a 'layers' student is made from the layers of a Hugging Face folder "
                            "upload; this model is a .pt2 program: choose a 'low_rank', 'zoo' or 'upload' student")
        elif "num_hidden_layers" not in folder:
            continue  # recorded before layer counts were (checked when the job starts)
        elif folder["num_hidden_layers"] is None and decoder_student(folder.get("task"), folder.get("model_type")):
            problems.append(f"{where}: a 'layers' student of {_a(folder['task'])} model keeps some of its decoder's "
                            "layers, "
                            f"and this {folder.get('model_type')} config.json gives no decoder layer count "
                            f"({' or '.join(DECODER_LAYER_FIELDS)})")
        elif folder["num_hidden_layers"] is None:
            problems.append(f"{where}: a 'layers' student needs the folder's config.json to give num_hidden_layers, "
                            f"which this {folder.get('model_type')} config does not")
        else:
            try:
                kept_layers(student, folder["num_hidden_layers"])
            except ValueError as exc:
                decoder = f" ({_a(folder['task'])} model's student keeps some of its decoder's layers)" \
                    if decoder_student(folder.get("task"), folder.get("model_type")) else ""
                problems.append(f"{where}: {exc}{decoder}")
    return problems


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _position_problems(spec: JobCreate, positions: int | None) -> list[str]:
    """Windows longer than the model's positions index past its position table (folders uploaded before the
    positions were recorded are checked when the job starts)."""
    problems = []
    for index, stage in enumerate(spec.stages):
        if stage.method == "llm_ptq" and positions and stage.longest_sequence > positions:
            problems.append(f"stages.{index}: windows of {stage.longest_sequence} tokens "
                            "(calibration.sequence_length, evaluation.context_length) exceed the model's "
                            f"{positions} positions; set both to at most {positions}")
    return problems


def _check_split(split: str, signature: ModelSignature, manifest: DatasetManifest, spec: JobCreate,
                 folder: dict) -> list[str]:
    """`folder`: a Hugging Face folder's facts ({} for a .pt2); an image folder's uint8 images are converted in the
    worker by its processor's scaling."""
    arrays = manifest.splits[split]
    try:
        binding = bind_inputs([t.name for t in signature.inputs], list(arrays), split)
    except InvalidUpload as exc:
        return [str(exc)]
    problems = []
    for model_input in signature.inputs:
        key = binding[model_input.name]
        meta = arrays[key]
        shape, dtype = meta["shape"], meta["dtype"]
        expected = model_input.describe()
        if folder.get("task") in IMAGE_TASKS and dtype.lstrip("<>=|") in (PIXEL_DTYPE, "u1"):
            problems += _raw_image_problems(f"'{split}.{key}'", shape, model_input, folder.get("pixel_scaling"),
                                            folder.get("task"))
        elif adds_channel_dim(shape, model_input.shape):
            pass  # the loader inserts the missing size-1 channel dimension
        elif len(shape) != len(model_input.shape) or any(
                want is not None and got != want for got, want in zip(shape[1:], model_input.shape[1:])):
            problems.append(f"'{split}.{key}' has shape {shape} but the model input is {expected} "
                            f"(first dimension is the batch){_layout_hint(shape, model_input.shape)}")
        elif not _dtype_compatible(dtype, model_input.dtype) and not _pcm_waveform(folder, dtype, model_input):
            problems.append(f"'{split}.{key}' has dtype {dtype} but the model input is {expected}"
                            f"{_dtype_hint(dtype, model_input.dtype)}")
    if split in manifest.label_range:
        problems += _check_labels(split, manifest, signature, spec, folder.get("task") == "semantic-segmentation")
    return problems


def _pcm_waveform(folder: dict, dtype: str, model_input) -> bool:
    """int16 waveforms (16-bit PCM, as WAV files hold them) for an audio folder's waveform input: scaled to
    floats in the worker (`compression.hf_arrays`)."""
    return (folder.get("task") in AUDIO_TASKS and dtype.lstrip("<>=|") in ("int16", "i2")
            and list(model_input.shape) in ([None, None], [None, 1, None]))


def _raw_image_problems(where: str, shape: list[int], model_input, scaling: dict | None,
                        task: str | None = None) -> list[str]:
    """uint8 images for an image folder: channels-last or -first at the model's size, converted by its processor's
    scaling (`PixelScaling`) in the worker (`compression.hf_arrays`); an image matting model's with their trimap as
    a last channel, which the processor's normalization leaves out."""
    if scaling is None:
        return [f"{where} {NO_PROCESSOR}"]
    dims = model_input.shape[1:]
    if len(dims) == 4:  # a video classifier's clips: each frame is an image
        frames, dims = dims[0], dims[1:]
        if len(shape) not in (4, 5) or (frames is not None and shape[1] != frames) or (
                len(shape) == 4 and dims[0] != 1):
            return [f"{where} has shape {shape}: uint8 clips for this model are [N, {frames or 'frames'}, H, W, "
                    f"{dims[0]}] or [N, {frames or 'frames'}, {dims[0]}, H, W] (its config's num_frames frames "
                    "each; sample or pad each clip to that many)"]
        shape = [shape[0] * shape[1], *shape[2:]]
    channels, *size = dims
    layout = pixel_layout(shape, channels)
    if layout is None:
        return [f"{where} has shape {shape}: uint8 images for this model are [N, H, W, {channels}] or "
                f"[N, {channels}, H, W]"]
    processor = PixelScaling.from_json(scaling)
    if None not in size and tuple(layout[:2]) != tuple(size) and processor.output_size(*layout[:2]) != tuple(size):
        # images at another size are resized and cropped in the worker where the processor's steps end at the
        # model's size
        return [f"{where} holds {layout[0]}x{layout[1]} images but the model takes {size[0]}x{size[1]}, which its "
                "processor's resize and crop do not make of them: resize them (as its image processor does) "
                "before storing them"]
    trimap = task == IMAGE_MATTING and channels == 3 + TRIMAP_CHANNELS  # ViTMatte's, after the image's channels
    problem = processor.channel_problem(channels - TRIMAP_CHANNELS if trimap else channels)
    return [problem] if problem else []


def _layout_hint(shape: list[int], wanted: list[int | None]) -> str:
    """What likely went wrong when an array's shape differs from the input's in a recognisable way."""
    rows = shape[0] if shape else "N"
    if len(shape) == len(wanted) >= 3 and shape[1:] == [*wanted[2:], wanted[1]]:
        order = ", ".join(["0", str(len(shape) - 1), *map(str, range(1, len(shape) - 1))])
        return (f"; the array looks channels-last: store it channels-first, x.transpose({order}) -> "
                f"{[rows, *wanted[1:]]}")
    return ""


def _dtype_hint(array_dtype: str, model_dtype: str) -> str:
    if is_float_dtype(model_dtype) and array_dtype.lstrip("<>=|") in ("uint8", "u1"):
        return ("; convert the images the way the model was trained, e.g. x.astype('float32') / 255 (plus the "
                "model's normalization): integer pixels are not scaled silently")
    if is_float_dtype(model_dtype):
        return "; store the array as floats"
    return "; store the array as integers (token ids and masks are integer inputs)"


def _dtype_compatible(array_dtype: str, model_dtype: str) -> bool:
    """Floats feed float inputs and integers (token ids, masks) feed integer inputs; widths are converted."""
    return is_float_dtype(array_dtype) == is_float_dtype(model_dtype)


def is_float_dtype(dtype: str) -> bool:
    """A model's dtype ("float32", "bfloat16") or an array's as numpy names it, whose non-native byte order shows
    (">f4", "<f8" of a big-endian upload)."""
    return dtype.lstrip("<>=|").startswith(("float", "bfloat", "f"))


def _check_labels(split: str, manifest: DatasetManifest, signature: ModelSignature, spec: JobCreate,
                  segmentation_folder: bool = False) -> list[str]:
    """Labels must fit the model's first output (`compression.labels`): class indices 0..C-1 of [batch, C] logits,
    0/1 for a binary classifier's single output ([batch] or [batch, 1]), or a 0/1 matrix [N, K] matching a
    [batch, K] multi-label output the spec declares (evaluation.multi_label, or output_kind 'sigmoid') or the
    program computes with a sigmoid."""
    output = signature.outputs[0]
    low, high = manifest.label_range[split]
    labels = manifest.splits[split].get(LABEL_ARRAY, {})
    label_shape = labels.get("shape", [])
    if len(output.shape) == 3 and len(label_shape) == 2 and spec.evaluation.output_kind != "regression":
        return _check_position_labels(split, label_shape, low, high, output)
    if segmentation_folder:  # masks at the image's size, sampled at the model's map in the worker
        return _check_mask_labels(split, label_shape, low, high, output.shape[3])
    if len(label_shape) == 3:  # a .pt2's masks: already at its map, whose classes are the last axis
        if len(output.shape) != 4 or any(want is not None and got != want
                                         for got, want in zip(label_shape[1:], output.shape[1:3])):
            return [f"'{split}.y' holds masks {label_shape}, which label a class map [batch, height, width, classes] "
                    f"of that height and width; the model output is {output.describe()}: export it with its class "
                    "logits last, or drop the masks to measure fidelity to the original model"]
        return _check_mask_labels(split, label_shape, low, high, output.shape[3])
    if labels.get("values") or spec.evaluation.output_kind == "regression":
        return _check_label_values(split, label_shape, bool(labels.get("values")), output, spec)
    if is_multi_hot(label_shape):
        return _check_label_matrix(split, label_shape, output, spec)
    if _one_per_example(output):
        if low < 0 or high > 1:
            return [f"labels in '{split}.y' range over [{low}, {high}] but the model has one output (a binary "
                    "classifier's logit or probability), whose labels are 0 or 1; store 0/1 labels, or export the "
                    "model with one logit per class"]
        return []
    if len(output.shape) != 2 or output.shape[1] is None:
        return [f"'{split}.y' holds class labels but the model output {output.describe()} is not [batch, classes]; "
                "drop the labels to measure fidelity to the original model instead"]
    classes = output.shape[1]
    if low < 0 or high >= classes:
        return [f"labels in '{split}.y' range over [{low}, {high}] but the model has {classes} outputs "
                f"(classes 0..{classes - 1})"]
    return []


def _check_mask_labels(split: str, label_shape: list[int], low: float, high: float, classes: int | None) -> list[str]:
    """Masks [N, H, W] of a segmentation model's class map [batch, height, width, classes]
    (`compression.segmentation`): a class index 0..C-1 per pixel, or the ignore index (255, or -100) where none
    applies; brought to the map's size in the worker."""
    if len(label_shape) != 3:
        return [f"'{split}.y' has shape {label_shape}, but a semantic-segmentation model's labels are masks [N, H, W]: "
                "a class index per pixel of each image"]
    if (low < 0 and low != IGNORED_LABEL) or (classes is not None and high >= classes and high != MASK_IGNORE_INDEX):
        return [f"'{split}.y' ranges over [{low}, {high}] but the model has {classes} classes: masks hold class "
                f"indices 0..{classes - 1}, and {MASK_IGNORE_INDEX} (or {IGNORED_LABEL}) where a pixel is "
                "unlabelled"]
    return []


def _one_per_example(output) -> bool:
    """Whether a model output (a TensorSpec) holds one value per example: [batch] or [batch, 1]."""
    return len(output.shape) == 1 or (len(output.shape) == 2 and output.shape[1] == 1)


def _check_position_labels(split: str, label_shape: list[int], low: float, high: float, output) -> list[str]:
    """[N, L] labels of a sequence output [batch, L, C] (a token classifier's): a class index 0..C-1 per position,
    or -100 (transformers' ignore index) where none applies."""
    positions, classes = output.shape[1], output.shape[2]
    if positions is not None and positions != label_shape[1]:
        return [f"'{split}.y' labels {label_shape[1]} positions per example but the model output "
                f"{output.describe()} has {positions}; give one class index per position"]
    if (low < 0 and low != IGNORED_LABEL) or (classes is not None and high >= classes):
        return [f"'{split}.y' ranges over [{low}, {high}] but the model gives {classes} classes per position: "
                f"labels are class indices 0..{'C' if classes is None else classes - 1}, or {IGNORED_LABEL} where "
                "no label applies"]
    return []


def _check_label_values(split: str, label_shape: list[int], values: bool, output, spec: JobCreate) -> list[str]:
    """Values (floats that are no class index, or a matrix of numbers other than 0 and 1) label a regression model,
    which the spec declares (evaluation.output_kind 'regression'; then class-like labels are values too), or which
    fractional values [N] of a model with one output ([batch] or [batch, 1]) can only be: one value per output, [N]
    for a model with one output, [N, K] for [batch, K] (a matrix could be soft class targets: declared)."""
    kind = spec.evaluation.output_kind
    if kind is None and values and len(label_shape) == 1 and _one_per_example(output):
        return []  # one fractional value per example of a one-output model: only a regression model's (inferred)
    if kind != "regression":
        shown = f"evaluation.output_kind is '{kind}'" if kind else "evaluation.output_kind is not set"
        return [f"'{split}.y' holds values (floats that are no class index, or a matrix of numbers other than 0 and "
                f"1), which a regression model predicts, but {shown}: for a regression model set "
                "evaluation.output_kind to 'regression'; for a classifier store one class index per example, shape "
                "[N] (a one-hot or probability matrix becomes y.argmax(axis=1)); for a multi-label model a 0/1 matrix"]
    per_example = label_shape[1] if len(label_shape) == 2 else 1
    outputs = 1 if len(output.shape) == 1 else output.shape[1] if len(output.shape) == 2 else None
    if outputs != per_example:
        return [f"'{split}.y' gives {per_example} value(s) per example but the regression model's output is "
                f"{output.describe()}; label each example with one value per output ([N] for one output, [N, K] for "
                "K)"]
    return []


def _check_text_labels(split: str, manifest: DatasetManifest, signature: ModelSignature, spec: JobCreate,
                       folder: dict) -> list[str]:
    """A .jsonl's labels (class indices, class names, multi-label lists, values or word tags:
    compression.text_labels) against the folder's classes. A folder recorded before its classes were has its names
    and lists checked by the worker."""
    labels = manifest.splits[split][LABEL_ARRAY]
    reader, answers = folder.get("task") == "question-answering", bool(labels.get("answers"))
    if reader != answers:
        return [f"split '{split}': {ANSWERS_NOT_READ if reader else ANSWERS_NEED_A_READER}"]
    if answers:
        return []
    names, multi_label = labels.get("names", []), bool(labels.get("multi_label"))
    values, per_word = bool(labels.get("values")), bool(labels.get("per_word"))
    recorded = folder.get("classes")
    regression = bool((recorded or {}).get("regression"))
    if folder.get("task") == "token-classification" or per_word:
        output = signature.outputs[0].shape
        classes = ModelClasses(output[-1], (recorded or {}).get("names"), False,
                               per_token=folder.get("task") == "token-classification")
        return label_problems(f"split '{split}' of the .jsonl", names, multi_label,
                              manifest.label_range.get(split), classes, rows=labels["shape"][0], values=values,
                              per_word=per_word)
    if not names and not multi_label and not values and not regression:
        return _check_labels(split, manifest, signature, spec) if split in manifest.label_range else []
    if folder.get("task") != "sequence-classification":
        classes = ModelClasses(None, None, False)
    elif recorded is None:
        return []
    else:
        classes = ModelClasses(signature.outputs[0].shape[1], recorded.get("names"),
                               bool(recorded.get("multi_label")) or spec.evaluation.multi_label, regression)
    if (values or regression) and spec.evaluation.output_kind not in (None, "regression"):
        return [f"split '{split}' of the .jsonl labels a regression head with values, but evaluation.output_kind is "
                f"'{spec.evaluation.output_kind}'; leave it unset or set it to 'regression'"]
    if (values or regression) and spec.evaluation.metric == "accuracy":
        return [f"split '{split}' of the .jsonl labels a regression head with values, which accuracy does not "
                "count; use evaluation.metric 'label_spearman' (their rank correlation with the outputs)"]
    # Values per row: K for lists of K values ([N, K]), the lists' one length for lists of whole numbers (a
    # regression head reads them as values), else one.
    value_width = (labels["shape"][1] if len(labels["shape"]) == 2 else labels.get("list_width") if multi_label
                   else 1)
    return label_problems(f"split '{split}' of the .jsonl", names, multi_label,
                          None if values else manifest.label_range.get(split), classes, labels.get("flag_width"),
                          labels["shape"][0], values, value_width=value_width,
                          mixed_lists=bool(labels.get("mixed_lists")))


def _check_label_matrix(split: str, label_shape: list[int], output, spec: JobCreate) -> list[str]:
    """A 0/1 label matrix is multi-label only where the spec says so: for a softmax classifier it is one-hot."""
    evaluation = spec.evaluation
    # A program whose output is computed by sigmoid gives independent probabilities: multi-label by construction.
    if not (evaluation.multi_label or evaluation.output_kind == "sigmoid" or output.producer == "sigmoid"):
        return [f"'{split}.y' is a label matrix {label_shape}: for a classifier store one class index per example, "
                "shape [N] (a one-hot or probability matrix becomes y.argmax(axis=1)); for a multi-label model "
                "(independent 0/1 labels) set evaluation.multi_label to true (logit outputs) or "
                "evaluation.output_kind to 'sigmoid' (probability outputs)"]
    if len(output.shape) != 2 or output.shape[1] != label_shape[1]:
        return [f"'{split}.y' holds {label_shape[1]} labels per example but the model output {output.describe()} "
                f"is not [batch, {label_shape[1]}]: a multi-label model gives one output per label"]
    return []


def _fixed_batch_problems(inputs) -> list[str]:
    """One problem naming the inputs exported without a dynamic batch (torch.export's default: every size fixed
    to the example's) and the export call that gives one, shared by every input."""
    fixed = [tensor for tensor in inputs if not tensor.shape or tensor.shape[0] is not None]
    if not fixed:
        return []
    shapes = ", ".join(f'"{tensor.name}": {{0: batch}}' for tensor in inputs)
    return [f"model input{'s' if len(fixed) > 1 else ''} {', '.join(t.describe() for t in fixed)} "
            f"{'have' if len(fixed) > 1 else 'has'} a fixed batch size, so the model cannot run on batches: export "
            f'it with a dynamic batch dimension, batch = torch.export.Dim("batch"); '
            f"torch.export.export(model, example, dynamic_shapes={{{shapes}}})"]
