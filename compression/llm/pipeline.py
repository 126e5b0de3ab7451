"""Run a job on a causal language model uploaded as a Hugging Face folder with a `.jsonl` text dataset.

The folder is unpacked under the archive rules, its tokenizer turns each split's text into one token stream,
and every model is measured the same way: perplexity on the evaluation split (and generation speed), bytes of
its safetensors files. Nothing is downloaded and no remote code runs (`local_files_only`, `trust_remote_code`
off, safetensors only).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Mapping

import torch

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.errors import InvalidUpload
from compression.archive.gpt2_names import CONV1D_DECODERS
from compression.archive.hf_architectures import (
    ARRAY_FEATURE_TASK,
    ARRAY_TASKS,
    AUDIO_FRAMES,
    AUDIO_XVECTOR,
    CANDIDATE_LABEL_TASKS,
    IMAGE_EMBEDDING,
    IMAGE_MATTING,
    IMAGE_TASKS,
    IMAGE_TO_IMAGE,
    NORMAL_ESTIMATION,
    POINTMAP_ESTIMATION,
    POSE_ESTIMATION,
    SEQ2SEQ_TASKS,
    ZERO_SHOT_DETECTION,
    ZERO_SHOT_IMAGES,
)
from compression.archive.hf_folder import REGRESSION_PROBLEM, class_count, learned_positions, read_hf_folder
from compression.archive.jsonl import PAIRS_NOT_FOR_CAUSAL_LM, read_jsonl
from compression.context import RunContext
from compression.llm.evaluate import evaluate_llm, load_quantized
from compression.llm.export import folder_bytes
from compression.llm.gpt2_linear import (
    MAX_OUTPUT_GAP,
    gpt2_as_opt,
    masked_output_gap,
    opt_config,
    rewrite_note,
    runs_as_opt,
    write_linear_folder,
    write_opt_folder,
)
from compression.llm.stage import TextTask
from compression.llm.text import check_tokenizes, tokenize
from compression.methods import apply_stage
from compression.pipeline import PipelineResult, StageOutcome
from compression.specs.common import EvaluationSpec
from compression.specs.llm import ASYMMETRIC_EXPERTS, LLM_PTQ_ALONE

LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}
MIN_LINEAR_SHARE = 0.9  # of a decoder block's weights (the rest: norms, biases; dense architectures hold > 0.99)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)


def load_causal_lm(folder: Path):
    from compression.causal_lm_class import AutoCausalLM

    return AutoCausalLM.from_pretrained(folder, use_safetensors=True, **LOCAL_ONLY).eval()


def check_applicable(folder: Path, stages: list) -> None:
    """Seconds, not minutes, into the job: the model built on the meta device (no weights read) must have
    `nn.Linear` layers in its decoder blocks holding most of their weights (a mixture of experts' once split per
    expert, in a layout a folder can hold per expert, with symmetric weights: `compression.llm.moe`), a learned
    position table (if any) as long as the stages' windows. (AWQ's scaling groups are found in each block's forward
    as it runs: `compression.llm.awq_groups`.) A GPT-2 model is checked as the `nn.Linear` rewrite the job runs on
    (`compression.llm.gpt2_linear`), GPT-1 likewise."""
    from transformers import AutoConfig

    from compression.causal_lm_class import AutoCausalLM
    from compression.llm.apply import weight_format
    from compression.llm.blockwise import linear_layers
    from compression.llm.init_reads import MAX_INIT_READ_SHARE, causal_lm_init_reads
    from compression.llm.model import LayerwiseModel
    from compression.llm.moe import check_expert_widths, kept_float, layout_problem, split_experts

    config = AutoConfig.from_pretrained(folder, **LOCAL_ONLY)
    if config.model_type in CONV1D_DECODERS:
        config = opt_config(config.to_dict())
    with torch.device("meta"):
        model = AutoCausalLM.from_config(config)
    shapes = [list(parameter.shape) for parameter in model.parameters()]
    positions = learned_positions(config.to_dict(), shapes)
    for index, spec in enumerate(stages):
        if positions is not None and spec.longest_sequence > positions:
            raise ValueError(f"stage {index}: {spec.longest_sequence} tokens per window "
                             f"(calibration.sequence_length, evaluation.context_length) exceed the "
                             f"{positions} positions this {config.model_type} model has; set both to at most "
                             f"{positions}")
    if shared := getattr(config.get_text_config(), "num_kv_shared_layers", 0):
        # Gemma 3n/4: the last layers attend with keys and values an earlier layer computed in the same pass
        raise ValueError(f"the last {shared} decoder blocks of this {config.model_type} model "
                         "reuse the keys and values of earlier blocks (num_kv_shared_layers), which llm_ptq, "
                         "calibrating one block at a time, cannot replay; this configuration is not supported "
                         "(the other methods run on the exported program)")
    if reason := layout_problem(model):
        raise ValueError(f"llm_ptq cannot write this {config.model_type} mixture of experts as a compressed-tensors "
                         f"folder: {reason}")
    # Routers and gates of a mixture of experts, and layers the weight initialisation reads, stay float; the
    # latter are found on the folder's model as transformers loads it (a mixture's experts stacked).
    layerwise = LayerwiseModel(model)
    read_by_init = [name for name in causal_lm_init_reads(config) if layerwise.in_blocks(name)]
    float_layers = set(kept_float(model)) | set(read_by_init)
    first_block = f"{layerwise.prefix}.0."
    kept = {name.removeprefix(first_block) for name in float_layers if name.startswith(first_block)}
    # each expert as its own linear layers, as the stage quantizes them (`compression.llm.moe`)
    if split_experts(model) and not all(spec.is_symmetric for spec in stages):
        raise ValueError(ASYMMETRIC_EXPERTS)
    for spec in stages:
        check_expert_widths(model, weight_format(spec))
    block = layerwise.blocks[0]
    if not linear_layers(block):
        raise ValueError(f"the decoder blocks of this {config.model_type} model hold no nn.Linear layers "
                         f"({type(block).__name__}), which is what llm_ptq quantizes; this architecture is not "
                         "supported")
    own_forward = sorted({type(layer).__name__ for name, layer in linear_layers(block).items()
                          if type(layer).forward is not torch.nn.Linear.forward
                          and name not in kept})
    if own_forward:
        # compressed-tensors replaces nn.Linear's forward when transformers loads the written folder; Falcon's
        # FalconLinear computes `input @ self.weight.T` itself, and its folder then fails to load.
        raise ValueError(f"the decoder blocks of this {config.model_type} model use linear layers with their own "
                         f"forward ({', '.join(own_forward)}), which a compressed-tensors folder cannot hold "
                         "(transformers would not load it back); this architecture is not supported")
    in_linears = sum(layer.weight.numel() for layer in linear_layers(block).values())
    total = sum(parameter.numel() for parameter in block.parameters())
    if in_linears < MIN_LINEAR_SHARE * total:
        # Weights in a layout neither nn.Linear nor a known mixture of experts: quantizing only the rest would
        # return a model barely smaller, said as if it were done.
        raise ValueError(f"only {in_linears / total:.0%} of the weights of this {config.model_type} model's decoder "
                         f"blocks are nn.Linear layers, which is what llm_ptq quantizes (the rest would stay "
                         "unquantized); llm_ptq does not support this architecture")
    if (read_share := _weight_share(layerwise, read_by_init)) > MAX_INIT_READ_SHARE:
        # GPTBigCode's `_init_weights` reads `c_proj.weight`: transformers runs it on every module of a loaded
        # model, and the folder would fail to load ("'Linear' object has no attribute 'weight'") unless those
        # layers stay float; most of the blocks' weights float would be a folder barely smaller.
        raise ValueError(f"transformers cannot load a compressed-tensors folder of this {config.model_type} model: "
                         "its weight initialisation reads the float weight of linear layers holding "
                         f"{read_share:.0%} of its decoder blocks' linear weights, "
                         "which a quantized layer replaces, and so much kept float would leave the folder barely "
                         "smaller; this architecture is not supported")


def _weight_share(layerwise, names: list[str]) -> float:
    """The share of the decoder blocks' linear weights that the layers `names` hold."""
    from compression.llm.blockwise import linear_layers

    sizes = {f"{layerwise.prefix}.{index}.{name}": layer.weight.numel()
             for index, block in enumerate(layerwise.blocks) for name, layer in linear_layers(block).items()}
    return sum(sizes.get(name, 0) for name in names) / max(sum(sizes.values()), 1)


def split_tokens(splits: dict, name: str, tokenizer) -> torch.Tensor | None:
    """One stream for a split: its rows joined by blank lines, as perplexity corpora are."""
    if name not in splits:
        return None
    return tokenize(tokenizer, "\n\n".join(splits[name].texts))


def run_llm_pipeline(model_path: str | Path, dataset_path: str | Path, stages: list, evaluation: EvaluationSpec,
                     ctx: RunContext, workdir: str | Path, train_split: str = "train",
                     limits: ArchiveLimits = DEFAULT_LIMITS) -> PipelineResult:
    workdir = Path(workdir)
    ctx.progress("load", 0, 1)
    source = workdir / "source"
    read_hf_folder(model_path, limits, task="causal-lm", extract_to=source)
    started = time.monotonic()
    check_applicable(source, stages)  # this job's dry run (compression.dry_run is the programs' one)
    checked = {f"{index}:{spec.method}": {"checked": "decoder blocks of the model built without weights",
                                          "time_s": round(time.monotonic() - started, 3)}
               for index, spec in enumerate(stages)}
    splits = read_jsonl(dataset_path, limits, keep_text=True)
    if any(split.paired for split in splits.values()):
        raise ValueError(PAIRS_NOT_FOR_CAUSAL_LM)
    tokenizer = load_tokenizer(source)
    check_tokenizes(tokenizer, [text for split in splits.values() for text in split.texts])
    eval_tokens = split_tokens(splits, evaluation.split, tokenizer)
    if eval_tokens is None or len(eval_tokens) < 2:
        raise ValueError(f"the evaluation split '{evaluation.split}' has fewer than 2 tokens of text")
    calibration = split_tokens(splits, train_split, tokenizer)
    ctx.progress("load", 1, 1)

    ctx.progress("evaluate", 0, 1)
    reference = load_causal_lm(source)
    try:
        baseline = evaluate_llm(reference, stages[0].evaluation, eval_tokens)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - an image-text model whose forward needs its images (BLIP-2, ...)
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"this {reference.config.model_type} model ({type(reference).__name__}) could not compute "
                         f"next-token logits from text alone ({type(exc).__name__}: {first_line}); llm_ptq "
                         "compresses causal LMs, and image-text models through their text-only forward") from exc
    baseline |= {"size_bytes": folder_bytes(source), "parameters": sum(p.numel() for p in reference.parameters())}
    if runs_as_opt(source):
        # The upload is measured as it is; the stages compress its nn.Linear rewrite (checked equal on this text).
        baseline["rewritten_as"] = write_linear_folder(source, workdir / "source_linear", reference, eval_tokens)
        source = workdir / "source_linear"
    del reference
    ctx.progress("evaluate", 1, 1)

    outcomes = []
    for index, spec in enumerate(stages):
        stage_ctx = ctx.for_stage(f"{index}:{spec.method}")
        stage_dir = workdir / f"{index}_{spec.method}"
        stage_dir.mkdir(parents=True, exist_ok=True)
        result = apply_stage(spec, source, TextTask(calibration, stage_dir, train_split), stage_ctx)
        stage_ctx.progress("evaluate", 0, 1)
        metrics = evaluate_llm(load_quantized(result.folder), spec.evaluation, eval_tokens)
        stage_ctx.progress("evaluate", 1, 1)
        size = folder_bytes(result.folder)
        metrics |= {"size_bytes": size, "compression_ratio": baseline["size_bytes"] / size,
                    "model_artifact": result.artifacts[0].name,
                    "perplexity_increase": metrics["perplexity"] / baseline["perplexity"] - 1,
                    "method_metrics": result.metrics}
        if result.metrics.get("warnings"):  # the job's warnings are its stages' (`PipelineResult.warnings`)
            metrics["warnings"] = result.metrics["warnings"]
        outcomes.append(StageOutcome(spec.method, metrics, result.artifacts))
    return PipelineResult(baseline, outcomes, checked)


def export_folder(source: Path, task: str, splits: dict, workdir: Path, embedding, split: str,
                  multi_label: bool = False) -> tuple[Path, tuple[torch.Tensor, ...], dict | None]:
    """`folder_to_program` (model.pt2, dataset.npz in `workdir`) of the folder the job runs on: for GPT-2 (and
    GPT-1) its OPT rewrite (`compression.llm.gpt2_linear`), whose nn.Linear layers a compressed-tensors folder
    can hold, when it gives the upload's outputs on the job's own padded rows; else the upload itself. Returns
    that folder, the example rows and what the baseline reports about the rewrite."""
    from compression.hf_program import example_rows, folder_to_program, load_folder_model

    def export(folder: Path):
        return folder_to_program(folder, task, splits, workdir / "model.pt2", workdir / "dataset.npz", embedding,
                                 multi_label)

    if not runs_as_opt(source):
        return source, export(source), None
    linear = workdir / "source_linear"
    upload = load_folder_model(source, task, embedding)
    model_type = upload.model.config.model_type
    try:
        write_opt_folder(source, linear, gpt2_as_opt(upload.model))
    except ValueError as exc:  # what OPT cannot express (layer-norm epsilon, cross-attention): run the upload
        return source, export(source), {"from": model_type, "to": None, "why": str(exc)}
    try:
        example = export(linear)
    except ValueError as exc:  # e.g. a tokenizer giving GPT-2 `token_type_ids`, which OPT's forward does not take
        shutil.rmtree(linear)
        return source, export(source), {"from": model_type, "to": None, "why": f"the OPT rewrite did not run on "
                                        f"this job's rows ({str(exc)[:300]}); the upload runs as it is"}
    rows = example_rows(workdir / "dataset.npz", split if split in splits else next(iter(splits)), 32)
    gap = masked_output_gap(upload, load_folder_model(linear, task, embedding), rows)
    if gap <= MAX_OUTPUT_GAP:
        return linear, example, rewrite_note(model_type, gap)
    # e.g. left padding: OPT counts positions over the mask, GPT-2 over every slot
    shutil.rmtree(linear)
    return source, export(source), {
        "from": model_type, "to": None, "max_output_gap": gap,
        "why": "the OPT rewrite differs from the upload on this job's rows; the upload runs as it is, and its "
               "stages' folders are refused for its Conv1D layers"}


def scorer_metric(evaluation: EvaluationSpec, task: str, config: dict, splits: dict) -> EvaluationSpec:
    """A sequence classifier with one label is a scorer (a reranker's relevance, a regression head's value): its
    fidelity is judged by the rank correlation of its scores (`score_spearman`) unless the job chose a metric or
    the evaluation split has labels (accuracy); the sign agreement top1_agreement would read for its single logit
    says nothing of a regression head whose outputs are all positive."""
    rows = splits.get(evaluation.split)
    if (evaluation.metric is not None or task != "sequence-classification" or rows is None or rows.labels
            or min(rows.rows, evaluation.max_samples or rows.rows) < 3):
        return evaluation
    return evaluation.model_copy(update={"metric": "score_spearman"}) if class_count(config) == 1 else evaluation


def regression_kind(evaluation: EvaluationSpec, task: str, config: dict, splits: dict) -> EvaluationSpec:
    """A regression head (config.json problem_type 'regression', or a classifier given values such as 3.8) outputs
    values: its kind is 'regression' unless the job declared one, so labels are read as values (MSE, and
    `label_spearman`) and outputs compared by their ranks."""
    values = any(rows.values for rows in splits.values())
    if evaluation.output_kind is not None or task != "sequence-classification" or not (
            values or config.get("problem_type") == REGRESSION_PROBLEM):
        return evaluation
    return evaluation.model_copy(update={"output_kind": "regression"})


def run_folder_pipeline(model_path: str | Path, dataset_path: str | Path, task: str, stages: list,
                        evaluation: EvaluationSpec, ctx: RunContext, workdir: str | Path, train_split: str = "train",
                        limits: ArchiveLimits = DEFAULT_LIMITS, uploaded_models: Mapping[str, Path] | None = None,
                        **pipeline_options) -> PipelineResult:
    """A Hugging Face folder job: `llm_ptq` on a causal LM; any other method, and any encoder or classifier, runs on the
    model exported to a program and its text tokenized to arrays, like any `.pt2` job (a causal LM's labels are each
    position's next token: `compression.hf_program.next_token_labels`). A sentence-transformers folder's
    feature-extraction program outputs the sentence embedding it declares (unless evaluation.sentence_embedding is
    false), said in the baseline's metrics under "sentence_embedding". A 'layers' distillation student is built here
    from the folder (`compression.hf_layer_student`), and the stages from its stage on are written back as its
    folder."""
    llm_stages = [spec.method == "llm_ptq" for spec in stages]
    if any(llm_stages) and not all(llm_stages):
        raise ValueError(LLM_PTQ_ALONE)
    if task == "causal-lm" and all(llm_stages):
        return run_llm_pipeline(model_path, dataset_path, stages, evaluation, ctx, workdir, train_split, limits)
    from compression.array_seq2seq import array_seq2seq_folder_to_program
    from compression.ctc_transcripts import add_transcript_changes
    from compression.hf_arrays import (
        array_folder_to_program,
        array_rows,
        check_one_shape,
        prepared_dataset,
        reference_transcripts,
    )
    from compression.hf_folder_export import rounding_ops, stage_folder_artifacts
    from compression.hf_layer_student import build_layer_students
    from compression.hf_program import example_rows
    from compression.io import load_program
    from compression.modes import eval_mode
    from compression.pipeline import run_pipeline
    from compression.segmentation import masks_for_program
    from compression.timm_resnet import convert_timm_resnet

    workdir = Path(workdir)
    ctx.progress("export", 0, 1)
    source = workdir / "source"
    folder = read_hf_folder(model_path, limits, task=task, extract_to=source)
    task = folder.task  # the one read from config.json when the caller gave none
    if task in IMAGE_TASKS:  # a DETR checkpoint's timm ResNet, as transformers' own (timm is not installed)
        convert_timm_resnet(source)
    declared = folder.sentence_embedding
    embedding = declared if evaluation.sentence_embedding else None
    if embedding is not None and evaluation.output_kind is None:
        # Declared, not detected: a cls or last-token vector ends in a layer norm or a gather, which the detector
        # would take for logits.
        evaluation = evaluation.model_copy(update={"output_kind": "embeddings"})
    if task in ("question-answering", "causal-lm", "fill-mask", *SEQ2SEQ_TASKS, "speech-recognition",
                "semantic-segmentation", AUDIO_FRAMES, POSE_ESTIMATION) \
            and evaluation.output_kind is None:
        # Start and end logits over the tokens, stacked (distributions over positions), or a causal or masked LM's
        # or CTC recognizer's logits over its vocabulary at each position, a segmentation model's class logits at
        # each pixel: the detector could take them for hidden states.
        evaluation = evaluation.model_copy(update={"output_kind": "logits"})
    prompts = evaluation.prompts() if task == ZERO_SHOT_IMAGES else evaluation.queries() \
        if task == ZERO_SHOT_DETECTION else None
    if task in CANDIDATE_LABEL_TASKS and prompts is None:
        raise InvalidUpload(CANDIDATE_LABEL_TASKS[task])
    if task == ZERO_SHOT_IMAGES and evaluation.output_kind is None:  # a score per candidate label
        evaluation = evaluation.model_copy(update={"output_kind": "logits"})
    if task == IMAGE_MATTING and evaluation.output_kind is None:  # opacities in [0, 1], a sigmoid's
        evaluation = evaluation.model_copy(update={"output_kind": "sigmoid"})
    if task == AUDIO_XVECTOR and evaluation.output_kind is None:
        # a speaker embedding, which ends in a linear layer: the detector would take it for logits
        evaluation = evaluation.model_copy(update={"output_kind": "embeddings"})
    if task in ("depth-estimation", IMAGE_TO_IMAGE, NORMAL_ESTIMATION, POINTMAP_ESTIMATION) \
            and evaluation.output_kind is None:
        # compared whole (a normal map's cosine: the mean cosine of each pixel's angle)
        evaluation = evaluation.model_copy(update={"output_kind": "hidden_states"})
    if task in ("object-detection", ZERO_SHOT_DETECTION) and evaluation.output_kind is None:
        # class scores, boxes (`compression.detection`)
        evaluation = evaluation.model_copy(update={"output_kind": "detections"})
    if task in ARRAY_FEATURE_TASK.values() and evaluation.output_kind is None:
        # A base model's features, or a dual encoder's image embedding: the detector would take a last layer that
        # ends in a linear (CLIP's projection) for logits.
        embedding_output = folder.signature()["outputs"][0]["name"] == IMAGE_EMBEDDING
        evaluation = evaluation.model_copy(update={"output_kind": "embeddings" if embedding_output
                                                   else "hidden_states"})
    rewritten = None
    if task in ARRAY_TASKS:
        evaluation = evaluation.declared_by_head(folder.signature()["hf"]["classes"])
        dataset = prepared_dataset(folder, Path(dataset_path), workdir)
        check_one_shape(dataset, [evaluation.split, train_split])
        if task in SEQ2SEQ_TASKS:  # the decoder's input and the labels: references, or what the upload writes
            example = array_seq2seq_folder_to_program(source, task, dataset, evaluation.split, workdir / "model.pt2",
                                                      workdir / "seq2seq.npz")
            dataset = workdir / "seq2seq.npz"
        else:
            example = array_folder_to_program(source, task, dataset, evaluation.split, workdir / "model.pt2",
                                              prompts)
        if task == "semantic-segmentation":  # label masks sampled at the model's output map
            dataset = masks_for_program(dataset, workdir / "model.pt2", example, folder.config, workdir)
    else:
        splits = read_jsonl(dataset_path, limits, keep_text=True)
        evaluation = regression_kind(scorer_metric(evaluation, task, folder.config, splits), task, folder.config,
                                     splits)
        source, example, rewritten = export_folder(source, task, splits, workdir, embedding, evaluation.split,
                                                   evaluation.multi_label)
        dataset = workdir / "dataset.npz"
    students = build_layer_students(stages, source, task, example, embedding, workdir / "students", prompts)
    ctx.progress("export", 1, 1)
    # pipeline_options: what the worker gives any job (on_measured, known_baseline, upload_outputs_file).
    result = run_pipeline(workdir / "model.pt2", dataset, students.stages, evaluation, ctx,
                          workdir / "stages", train_split, limits,
                          uploaded_models={**(uploaded_models or {}), **students.programs},
                          keep_computed_weights=True, **pipeline_options)
    students.add_details(result)
    if declared is not None:
        result.baseline["sentence_embedding"] = declared.to_metrics() | {"applied": embedding is not None}
    if rewritten is not None:
        result.baseline["rewritten_as"] = rewritten
    if task == "speech-recognition":
        # The blank is the pad token (transformers' CTC loss and tokenizers), unless the config names its own.
        blank = folder.config.get("blank_token_id", folder.config.get("pad_token_id"))
        samples = result.baseline["samples"]
        add_transcript_changes(result, eval_mode(load_program(workdir / "model.pt2", limits).module()),
                               array_rows(dataset, evaluation.split, task, rows=samples)[0],
                               blank if type(blank) is int else 0, source, ctx,
                               reference_transcripts(dataset, evaluation.split, samples))
    rows = (array_rows(dataset, evaluation.split, task) if task in ARRAY_TASKS and task not in SEQ2SEQ_TASKS
            else example_rows(dataset, evaluation.split))
    stage_folder_artifacts(result, students.source_folders(source), task, rows, workdir / "hf", ctx,
                           rounding_ops(workdir / "model.pt2", limits), embedding,
                           frozenset(students.folders), prompts)
    return result
