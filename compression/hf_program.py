"""Encoders, classifiers and (for every method but llm_ptq) causal LMs uploaded as Hugging Face folders, run through the
ordinary `.pt2` pipeline. The folder is loaded with transformers (safetensors only, local files only, no remote
code), wrapped so that it takes `input_ids` and `attention_mask` (and, for sentence pairs, `token_type_ids` where the
model reads them) and returns one tensor (`last_hidden_state` for feature-extraction, `logits` for
sequence-classification, a row of class logits per token for token-classification, the answer span's start and end
logits for question-answering, the next-token logits for causal-lm, the logits over the vocabulary at every token
for fill-mask (its text masked as `compression.masked_tokens` says), the logits over the vocabulary at each audio
frame for speech-recognition (a CTC head); for a sentence-transformers folder's
feature-extraction, the sentence embedding it declares: `compression.sentence_pooling`), and exported with a dynamic
batch like every program here. Text is tokenized with the folder's own tokenizer, padded to one length per job: the
longest row of the dataset, at most the model's positions (and MAX_TOKENS, a causal or masked LM's
MAX_CAUSAL_LM_TOKENS, and a sentence-transformers max_seq_length), so the exported program and every stage's
re-export see one shape.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import torch

from compression.archive.choices import CHOICES_NEED_MULTIPLE_CHOICE, MULTIPLE_CHOICE_NEEDS_CHOICES
from compression.archive.errors import InvalidUpload
from compression.archive.hf_architectures import (
    ARRAY_TASKS,
    AUDIO_FRAMES,
    AUDIO_XVECTOR,
    DECODER_INPUT,
    DETECTOR_NEEDS_QUERIES,
    FEATURE_TASKS,
    IMAGE_EMBEDDING,
    IMAGE_MATTING,
    IMAGE_TO_IMAGE,
    MULTIPLE_CHOICE,
    NORMAL_ESTIMATION,
    POINTMAP_ESTIMATION,
    POSE_ESTIMATION,
    QUERY_DETECTORS,
    VIDEO_CLASSIFICATION,
    ZERO_SHOT_DETECTION,
    ZERO_SHOT_IMAGES,
    ZERO_SHOT_NEEDS_LABELS,
    image_text_encoder,
)
from compression.archive.jsonl import (
    ANSWERS_NEED_A_READER,
    ANSWERS_NOT_READ,
    LABEL_ARRAY,
    MASKED_LM_READS_TEXT,
    PAIRS_NOT_FOR_CAUSAL_LM,
    PAIRS_NOT_FOR_SEQ2SEQ,
    SEQ2SEQ_READS_TARGETS,
    TARGETS_NEED_SEQ2SEQ,
    TextSplit,
)
from compression.archive.npz import IGNORED_LABEL
from compression.archive.sentence_transformers import SentenceEmbedding
from compression.archive.time_series import TIME_SERIES_TASKS, series_output
from compression.array_seq2seq import WRAPPERS as ARRAY_SEQ2SEQ_WRAPPERS
from compression.array_seq2seq import array_seq2seq_wrapper
from compression.detection import class_probabilities
from compression.hf_whole_model_folder import EncoderOf, encoder_of
from compression.io import export_branching_model, save_program
from compression.llm.text import check_tokenizes
from compression.masked_tokens import mask_token_id, masked_tokens
from compression.moe_experts import split_stacked_experts
from compression.parallel_experts import split_parallel_experts
from compression.parameter_writes import written_parameters
from compression.segmenter_class import MASK_SEGMENTERS
from compression.sentence_pooling import SentencePooling
from compression.seq2seq_lm import Seq2SeqLogits, text_output_arrays
from compression.symbolic_len import symbolic_len
from compression.text_labels import ModelClasses, label_array, word_tags
from compression.unread_weights import drop_unread_weights

LOCAL_ONLY = {"local_files_only": True, "trust_remote_code": False}
MAX_TOKENS = 512
# A causal LM's program outputs [batch, tokens, vocabulary] logits (4 bytes each): 256 tokens of a 32k vocabulary
# take 32 MiB per row, which every evaluation batch and kept reference output holds.
MAX_CAUSAL_LM_TOKENS = 256
VOCABULARY_TASKS = ("causal-lm", "fill-mask")  # tasks whose output is logits over the vocabulary at every token
# transformers' model_max_length when neither the tokenizer nor its config names one (VERY_LARGE_INTEGER).
UNSET_TOKENIZER_LIMIT = 10**9
EXAMPLE_ROWS = 2


class _TensorOutput(torch.nn.Module):
    """The model with the two token inputs and the task's one output (a graph output that a program can have);
    with `pooling`, the sentence embedding pooled from `last_hidden_state` over the real tokens."""

    def __init__(self, model: torch.nn.Module, output: str, pooling: SentencePooling | None = None,
                 options: dict | None = None):
        super().__init__()
        self.model, self.output, self.pooling, self.options = model, output, pooling, options or {}
        self.encoder_of: EncoderOf | None = None  # set where `model` is the encoder of a whole model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        output = getattr(self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True,
                                    **segments, **self.options), self.output)
        return output if self.pooling is None else self.pooling(output, attention_mask)


class _LastEosClassifier(torch.nn.Module):
    """A BART-style sequence classifier (BART, mBART, PLBart, LED, ...: an encoder-decoder whose
    `classification_head` reads the decoder's state at the last end-of-sequence token), computed as transformers
    does but with that token found by arithmetic: transformers selects it with a boolean mask, whose
    data-dependent shape torch.export can trace but not load back ("expected no unbacked symbols"), so such a
    folder failed (facebook/bart-large-mnli is one). A row without the token reads position 0 (transformers
    raises). Holds the model as `model`, as `_TensorOutput` does, so the program's names are the folder's."""

    output = "logits"  # what it computes, named as `_TensorOutput` names it
    pooling = None

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)[0]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        is_eos = input_ids.eq(self.model.config.eos_token_id)
        last = torch.where(is_eos, positions, torch.zeros_like(positions)).amax(dim=1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.model.classification_head(hidden[rows, last])


class _SpanLogits(torch.nn.Module):
    """An extractive question-answering model (`text` the question, `text_pair` the context) with one output: the
    start and end logits of the answer span over the tokens, [batch, 2, tokens]. Each row is a distribution over
    positions, so top-1 agreement and KL read whether the compressed model picks the same start and end. Holds the
    model as `model`, as `_TensorOutput` does, so the program's names are the folder's."""

    output = "span_logits"
    pooling = None

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **segments)
        return torch.stack([output.start_logits, output.end_logits], dim=1)


class _ArrayModel(torch.nn.Module):
    """An image or audio model with its one array input (named by each subclass's `forward`, as the program's
    input is) and one output: its logits (a classifier's classes; a CTC recognizer's vocabulary per frame), or a
    base model's features (`last_hidden_state`). Holds the model as `model`, as `_TensorOutput` does, so the
    program's names are the folder's. The program takes float32; a half-precision model gets its own dtype (a
    bfloat16 ResNet's convolutions refused float32 pixels; ViT's embeddings cast them themselves)."""

    pooling = None

    def __init__(self, model: torch.nn.Module, output: str = "logits"):
        super().__init__()
        self.model, self.output = model, output

    def run(self, name: str, value: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**{name: value.to(self.model.dtype)}, return_dict=True), self.output)


class _PixelModel(_ArrayModel):
    """An image model (ViT, DINOv2, ResNet, ConvNeXt, ...): the processor's `pixel_values` [batch, channels,
    height, width]."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.run("pixel_values", pixel_values)


class _VideoClassifier(_ArrayModel):
    """A video classifier (VideoMAE, TimeSformer, ViViT, V-JEPA 2, VideoPrism): clips [batch, frames, channels,
    height, width] as the program's `pixel_values` (V-JEPA 2 and VideoPrism name theirs `pixel_values_videos`) ->
    class logits [batch, classes] (VideoPrism's keep a unit token axis, [batch, 1, classes], which labels of one
    class per clip do not have)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.input_name = model.main_input_name

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits = self.run(self.input_name, pixel_values)
        return logits.reshape(logits.shape[0], logits.shape[-1])


class _PixelClassMap(_PixelModel):
    """A semantic segmentation model (SegFormer, DPT, BEiT, MobileViT, UperNet): its class logits over its output
    map, as transformers returns them ([batch, classes, height, width]; SegFormer's at a quarter of the input's
    size), channels last: [batch, height, width, classes], so that each pixel is a row of class logits that top-1
    agreement and KL read, as a token classifier's tokens are."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values).permute(0, 2, 3, 1)


class _PixelMaskClassMap(_PixelModel):
    """A mask classifier (Mask2Former, MaskFormer, EoMT) as a semantic segmentation model: each object query's class
    probabilities (less "no object") weigh its mask's sigmoid at every pixel, summed over the queries, as
    transformers' `post_process_semantic_segmentation` computes the class map; given as log-probabilities over the
    classes at each pixel of the mask map, channels last ([batch, height, width, classes]), so that top-1 agreement
    reads the class the post-processing picks and KL compares distributions."""

    def run(self, name: str, value: torch.Tensor) -> torch.Tensor:
        output = self.model(**{name: value.to(self.model.dtype)}, return_dict=True)
        classes = output.class_queries_logits.softmax(-1)[..., :-1]
        scores = torch.einsum("bqc,bqhw->bhwc", classes, output.masks_queries_logits.sigmoid())
        return (scores / scores.sum(-1, keepdim=True).clamp_min(1e-12)).clamp_min(1e-12).log()


class _PixelHeatmaps(_PixelModel):
    """A top-down pose estimator (ViTPose, Sapiens 2): each keypoint's heatmap [batch, keypoints, height, width] with
    its positions flattened, [batch, keypoints, height x width], so that each keypoint is a row over positions that
    top-1 agreement reads where it peaks (the location transformers' post-processing takes), as a reader's start
    and end are rows over tokens."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values).flatten(2)


class _PixelNormals(_PixelModel):
    """A surface normal estimator (Sapiens 2, TIPSv2 DPT): each pixel's normal L2-normalized, [batch, 3, height,
    width], as transformers' post-processing gives it: the cosine of two such maps, flattened, is then the mean
    cosine of the angle between their normals at each pixel."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(super().forward(pixel_values).float(), p=2, dim=1, eps=1e-8)


class _PixelPoints(_PixelModel):
    """A pointmap estimator (Sapiens 2): each pixel's 3-D point in metric coordinates, [batch, 3, height, width]:
    the canonical points divided by the model's scale per image, as transformers' post-processing gives them."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        output = self.model(pixel_values=pixel_values.to(self.model.dtype), return_dict=True)
        points = output.pointmaps.float()
        return points if output.scales is None else points / output.scales.float()[:, :, None, None]


class _PixelDetections(_PixelModel):
    """An object detector (DETR, YOLOS, RT-DETR, ...): for each object query, the probability of each class and the
    box, [batch, queries, classes + 4] (`compression.detection`): what transformers' post-processing reads,
    whichever way the family scores classes (softmax with a "no object" class, or a sigmoid per class)."""

    def run(self, name: str, value: torch.Tensor) -> torch.Tensor:
        output = self.model(**{name: value.to(self.model.dtype)}, return_dict=True)
        scores = class_probabilities(output.logits, self.model.config.num_labels)
        return torch.cat([scores, output.pred_boxes.to(scores.dtype)], -1)


class _SeriesModel(_ArrayModel):
    """A time-series head (PatchTST, PatchTSMixer): a window of the series, `past_values` [batch, context_length,
    channels] -> its class logits, regression values or forecast (`compression.archive.time_series`). PatchTST's
    classifier names its logits `prediction_logits`, PatchTSMixer's `prediction_outputs`."""

    def forward(self, past_values: torch.Tensor) -> torch.Tensor:
        output = self.model(past_values=past_values.to(self.model.dtype), return_dict=True)
        return next(getattr(output, name) for name in self.outputs if getattr(output, name, None) is not None)

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("prediction_logits", "prediction_outputs") if self.output == "logits" else (self.output,)


class _WaveformModel(_ArrayModel):
    """An audio model of the waveform (wav2vec2, HuBERT, WavLM, ...): `input_values` [batch, samples]; or AST,
    whose `input_values` are its filter-bank frames [batch, frames, mel bins]."""

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.run("input_values", input_values)


class _SpectrogramModel(_ArrayModel):
    """An audio model of spectrogram features named `input_features` (Whisper [batch, mel bins, frames],
    w2v-BERT, Parakeet)."""

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.run("input_features", input_features)


class ImageEmbedding(_PixelModel):
    """An image-text dual encoder (CLIP, SigLIP, ALIGN, ...) read for its image embedding: `get_image_features`
    ([batch, projection]: the vision tower's pooled output, projected where the model has a projection), the
    vector a search over images, or against the text embeddings, compares. The text tower is not run."""

    def __init__(self, model: torch.nn.Module):
        super().__init__(model, IMAGE_EMBEDDING)

    def run(self, name: str, value: torch.Tensor) -> torch.Tensor:
        features = self.model.get_image_features(**{name: value.to(self.model.dtype)}, return_dict=True)
        return features if isinstance(features, torch.Tensor) else features.pooler_output

    def cannot_compute(self, what: str, exc: Exception) -> ValueError:
        """The refusal of an architecture that raised `exc` computing `what` (SigLIP 2 wants patchified pixels)."""
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        return ValueError(f"this {self.model.config.model_type} model ({type(self.model).__name__}) could not "
                          f"compute {what} ({type(exc).__name__}: {first_line}); export it yourself "
                          "(torch.export.export) and upload the .pt2")

    def without_text_tower(self, example: tuple[torch.Tensor, ...]) -> list[str]:
        """Remove, in place, the model's parts the image embedding never reads (the text tower, its projection,
        the logit scale), found by running `example`; returns their names (none, all kept, where the image side
        turns out to read one of the model's own parameters). torch.export keeps every parameter of
        the module in the program, read or not: the stages leave unread weights alone (`run_pipeline`), but the
        program file, whose size every stage's `compression_ratio` is measured against, would hold the text tower
        too. The folder written from a stage takes it from the upload unchanged."""
        called = set()
        hooks = [child.register_forward_hook(lambda module, args, output, name=name: called.add(name))
                 for name, child in self.model.named_children()]
        try:
            with torch.no_grad():
                self(*example)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's architecture raises on images
            raise self.cannot_compute("its image embedding from pixel_values [batch, channels, height, width]",
                                      exc) from exc
        finally:
            for hook in hooks:
                hook.remove()
        unread = [name for name, _ in self.model.named_children() if name not in called]
        unread += [name for name, _ in self.model.named_parameters(recurse=False)]
        removed = {name: getattr(self.model, name) for name in unread}
        for name in unread:
            delattr(self.model, name)
        try:  # a parameter of the model itself is not seen by the hooks: one the image side reads stays
            with torch.no_grad():
                self(*example)
        except (AttributeError, TypeError):
            for name, value in removed.items():
                setattr(self.model, name, value)
            return []
        return unread


ARRAY_WRAPPERS = {"pixel_values": _PixelModel, "input_values": _WaveformModel, "input_features": _SpectrogramModel}


def _reads_last_eos(model: torch.nn.Module) -> bool:
    base = getattr(model, "model", None)
    return (isinstance(getattr(model, "classification_head", None), torch.nn.Module)
            and isinstance(getattr(base, "decoder", None), torch.nn.Module))


def auto_class(task: str):
    """transformers' Auto class that builds a model for `task` (AutoModel: the feature tasks)."""
    import transformers

    if task == "causal-lm":  # an image-text model's too (`compression.causal_lm_class`)
        from compression.causal_lm_class import AutoCausalLM

        return AutoCausalLM
    if task == "semantic-segmentation":  # a mask classifier's too (`compression.segmenter_class`)
        from compression.segmenter_class import AutoSegmenter

        return AutoSegmenter
    if task in TIME_SERIES_TASKS:  # PatchTST's and PatchTSMixer's heads, which no Auto class of transformers builds
        from compression.series_class import SERIES_HEADS

        return SERIES_HEADS[task]
    name = {"sequence-classification": "AutoModelForSequenceClassification",
            "token-classification": "AutoModelForTokenClassification",
            "question-answering": "AutoModelForQuestionAnswering",
            MULTIPLE_CHOICE: "AutoModelForMultipleChoice",
            "fill-mask": "AutoModelForMaskedLM",
            "image-classification": "AutoModelForImageClassification",
            VIDEO_CLASSIFICATION: "AutoModelForVideoClassification",
            "depth-estimation": "AutoModelForDepthEstimation",
            IMAGE_TO_IMAGE: "AutoModelForImageToImage",
            POSE_ESTIMATION: "AutoModelForPoseEstimation",
            IMAGE_MATTING: "AutoModelForImageMatting",
            NORMAL_ESTIMATION: "AutoModelForNormalEstimation",
            POINTMAP_ESTIMATION: "AutoModelForPointmapEstimation",
            "object-detection": "AutoModelForObjectDetection",
            # (BLIP-2's is its retrieval class; the others' their dual encoder, CLIPModel, SiglipModel, ...)
            ZERO_SHOT_IMAGES: "AutoModelForZeroShotImageClassification",
            ZERO_SHOT_DETECTION: "AutoModelForZeroShotObjectDetection",
            "audio-classification": "AutoModelForAudioClassification",
            AUDIO_XVECTOR: "AutoModelForAudioXVector",
            AUDIO_FRAMES: "AutoModelForAudioFrameClassification",
            "speech-recognition": "AutoModelForCTC",
            "seq2seq-lm": "AutoModelForSeq2SeqLM",
            "speech-seq2seq": "AutoModelForSpeechSeq2Seq",
            "image-to-text": "AutoModelForImageTextToText"}.get(task, "AutoModel")
    return getattr(transformers, name)


def load_folder_model(folder: Path, task: str, embedding: SentenceEmbedding | None = None,
                      dtype: torch.dtype | str = "auto", prompts: list[str] | None = None) -> torch.nn.Module:
    """`embedding`: a feature-extraction folder's declared sentence embedding, which then is the output. `dtype`:
    what the weights are loaded as; "auto" keeps the checkpoint's (a bfloat16 folder stays bfloat16). `prompts`:
    a zero-shot image classifier's candidate texts (`EvaluationSpec.prompts`), which its output scores."""
    from compression.formats.hf_folder import loading_options

    auto, options = auto_class(task), {**LOCAL_ONLY, **loading_options(folder)}
    # SDPA attention exports as one scaled_dot_product_attention op per layer: the pattern structured pruning
    # follows to remove whole heads (eager attention's matmul + softmax hid them, so only FFN channels went).
    # Architectures without it (DeBERTa-v2, MPNet; convolutional networks, which have no attention) refuse "sdpa"
    # with a ValueError and load as transformers loads them by default: eager attention, except in the parts that
    # have SDPA (Grounding DINO's BERT text backbone), which compute what users of `from_pretrained` get (eager
    # attention there gave other scores).
    # A fill-mask folder's loading report says whether the checkpoint holds the masked-LM head (`_check_head`).
    report = {"output_loading_info": True} if task == "fill-mask" else {}
    try:
        model = auto.from_pretrained(folder, use_safetensors=True, attn_implementation="sdpa", dtype=dtype,
                                     **options, **report)
    except ValueError:
        model = auto.from_pretrained(folder, use_safetensors=True, dtype=dtype,
                                     **options, **report)
    if report:
        model, loading = model
        if getattr(model, "hf_quantizer", None) is None:  # (a compressed folder's report lists its codes' names)
            _check_head(model, loading)
    model.eval()
    _decompress(model)
    if task == "sequence-classification":
        return (_LastEosClassifier(model) if _reads_last_eos(model) else _TensorOutput(model, "logits")).eval()
    if task in ("token-classification", MULTIPLE_CHOICE):  # a class per token; a logit per choice
        return _TensorOutput(model, "logits").eval()
    if task == "fill-mask":  # the logits over the vocabulary at every position
        return _TensorOutput(model, "logits").eval()
    if task == "causal-lm":  # the logits of every position, without the key/value cache generation would keep
        return _TensorOutput(model, "logits", options={"use_cache": False}).eval()
    if task == "question-answering":
        return _SpanLogits(model).eval()
    if task == "seq2seq-lm":
        return Seq2SeqLogits(model).eval()
    if task in ("speech-seq2seq", "image-to-text"):
        return array_seq2seq_wrapper(model)
    if task == ZERO_SHOT_IMAGES:
        from compression.zero_shot_images import ZeroShotImageClassifier, tokenized_prompts

        if not prompts:
            raise ValueError(ZERO_SHOT_NEEDS_LABELS)
        return ZeroShotImageClassifier(model, tokenized_prompts(folder, model.config.model_type, prompts)).eval()
    if task == ZERO_SHOT_DETECTION:
        from compression.zero_shot_detection import ZeroShotDetector, grounded_detector
        from compression.zero_shot_images import tokenized_prompts

        if not prompts:
            raise ValueError(DETECTOR_NEEDS_QUERIES)
        if model.config.model_type not in QUERY_DETECTORS:  # Grounding DINO: the text read inside the detector
            return grounded_detector(model, folder, prompts).eval()
        return ZeroShotDetector(model, tokenized_prompts(folder, model.config.model_type, prompts)).eval()
    if task == "image-feature-extraction" and image_text_encoder(model.config.model_type):
        return ImageEmbedding(model).eval()
    if task == VIDEO_CLASSIFICATION:
        return _VideoClassifier(model).eval()
    if task == "semantic-segmentation":
        masks = getattr(model.config, "model_type", None) in MASK_SEGMENTERS
        return (_PixelMaskClassMap(model) if masks else _PixelClassMap(model, "logits")).eval()
    if task == "depth-estimation":
        return _PixelModel(model, "predicted_depth").eval()
    if task == IMAGE_TO_IMAGE:
        return _PixelModel(model, "reconstruction").eval()
    if task == NORMAL_ESTIMATION:
        return _PixelNormals(model, "normals").eval()
    if task == POINTMAP_ESTIMATION:
        return _PixelPoints(model, "pointmaps").eval()
    if task == IMAGE_MATTING:  # each pixel's foreground opacity, [batch, 1, height, width]
        return _PixelModel(model, "alphas").eval()
    if task == POSE_ESTIMATION:
        return _PixelHeatmaps(model, "heatmaps").eval()
    if task == "object-detection":
        return _PixelDetections(model).eval()
    if task in TIME_SERIES_TASKS:
        return _SeriesModel(model, series_output(task, model.config.to_dict())["name"]).eval()
    if task in ARRAY_TASKS:  # the model's one array input, by the name transformers' class gives it
        wrapper = ARRAY_WRAPPERS.get(model.main_input_name)
        if wrapper is None:
            raise ValueError(f"this {model.config.model_type} model takes '{model.main_input_name}', not "
                             f"one of {sorted(ARRAY_WRAPPERS)}; export it yourself and upload the .pt2")
        output = "last_hidden_state" if task in FEATURE_TASKS else "embeddings" if task == AUDIO_XVECTOR else "logits"
        return wrapper(model, output).eval()
    if "decoder_input_ids" in inspect.signature(model.forward).parameters and hasattr(model, "get_encoder"):
        # (Funnel's `decoder` reads no decoder inputs: it upsamples the pooled encoder's features into the output.)
        # T5, BART, ...: the features are the encoder's (what T5EncoderModel and sentence-T5 compute); the whole
        # model would want decoder inputs too, and its export failed. Where transformers has an encoder-only class
        # (T5EncoderModel, MT5EncoderModel, ...) the folder is loaded as that, so that a stage's folder is one
        # `from_pretrained` loads; else the encoder module itself.
        encoder_class = _encoder_only_class(model)
        if encoder_class is None:  # its folder is the whole model with this encoder (`hf_whole_model_folder`)
            whole, model = model, model.get_encoder()
            wrapper = _TensorOutput(model, "last_hidden_state", _pooling(embedding)).eval()
            wrapper.encoder_of = encoder_of(whole, model)
            return wrapper
        model = encoder_class.from_pretrained(folder, use_safetensors=True, dtype=dtype, **LOCAL_ONLY).eval()
    return _TensorOutput(model, "last_hidden_state", _pooling(embedding)).eval()


def _check_head(model: torch.nn.Module, loading: dict) -> None:
    """Refuse a fill-mask folder whose checkpoint lacks weights of the masked-LM head (an ELECTRA discriminator saved
    as ElectraForPreTraining, a base model's checkpoint): transformers would start them random, and the job would
    compress a model that fills in nothing. (`from_pretrained` reports them in `loading`; a head tied to the word
    embeddings, as BERT's decoder is, is not missing.)"""
    missing = sorted(loading.get("missing_keys") or ())
    if missing:
        raise InvalidUpload(f"task fill-mask runs the checkpoint's masked-LM head, and these of its weights are not in "
                            f"the folder ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): they "
                            "would start random; upload a checkpoint saved with its masked-LM head (architectures "
                            f"{type(model).__name__}), or choose task feature-extraction")


def _decompress(model: torch.nn.Module) -> None:
    """Decompress a compressed-tensors folder's weights now: compressed-tensors does it in a hook on the model's
    own first call, which a wrapper that runs a part of it never makes (a BART classifier's base model and head,
    an encoder-decoder's encoder): its linears then ran on their int8 codes ("self and mat2 must have the same
    dtype"). A no-op on any other model."""
    quantizer = getattr(model, "hf_quantizer", None)
    if hasattr(model, "ct_decompress_hook") and hasattr(quantizer, "compressor"):
        quantizer.compressor.decompress_model(model)


def _pooling(embedding: SentenceEmbedding | None) -> SentencePooling | None:
    return SentencePooling(embedding) if embedding is not None else None


def _encoder_only_class(model: torch.nn.Module):
    """transformers' encoder-only class of an encoder-decoder base model (T5Model -> T5EncoderModel), or None."""
    import transformers

    name = type(model).__name__
    return getattr(transformers, name.removesuffix("Model") + "EncoderModel", None) if name.endswith("Model") \
        else None


def token_length(model: torch.nn.Module, splits: dict[str, TextSplit], tokenizer,
                 embedding: SentenceEmbedding | None = None, most: int = MAX_TOKENS) -> int:
    """The longest row, at most the model's positions, `most` (MAX_TOKENS; a causal LM's MAX_CAUSAL_LM_TOKENS), and
    the sentence-transformers max_seq_length (where sentence-transformers truncates: the embedding users get from
    longer text)."""
    check_tokenizes(tokenizer, [text for rows in splits.values() for text in rows.texts])
    longest = max(len(ids) for rows in splits.values() for ids in _encode(tokenizer, rows)["input_ids"])
    declared = (embedding and embedding.max_seq_length) or MAX_TOKENS
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if not isinstance(tokenizer_limit, int) or tokenizer_limit >= UNSET_TOKENIZER_LIMIT:
        tokenizer_limit = MAX_TOKENS
    return max(2, min(longest, usable_positions(model.model), most, declared, tokenizer_limit))


def usable_positions(model: torch.nn.Module) -> int:
    """How many tokens the model can take: its config's `max_position_embeddings`, less the rows a RoBERTa-style
    position table reserves. RoBERTa, XLM-R, CamemBERT, MPNet, Longformer, ... number positions from
    `padding_idx + 1` (the padding token's id), so a 512-row table (a tiny or retrained config; the released ones
    have 514) takes 510 tokens, and 512 failed the job with "index 512 is out of bounds"."""
    positions = getattr(model.config, "max_position_embeddings", None) or MAX_TOKENS
    for name, module in model.named_modules():
        padding = getattr(module, "padding_idx", None)
        weight = getattr(module, "weight", None)
        if "position" in name.rsplit(".", 1)[-1] and isinstance(padding, int) and isinstance(weight, torch.Tensor):
            positions = min(positions, weight.shape[0] - padding - 1)
    return positions


def _encode(tokenizer, rows: TextSplit, **options):
    """The tokenizer's encoding of the split's texts, or of its sentence pairs (text, text_pair) joined as the
    model was trained on them (separator tokens; segment ids where the model reads them); for rows with choices,
    of each (text, choice) pair, row after row ([rows x choices, tokens]: `tokenized_arrays` shapes it)."""
    if rows.choice_count:
        return tokenizer([text for text in rows.texts for _ in range(rows.choice_count)],
                         [choice for choices in rows.choices for choice in choices], **options)
    return tokenizer(rows.texts, rows.pairs, **options) if rows.paired else tokenizer(rows.texts, **options)


def text_input_names(splits: dict[str, TextSplit], tokenizer) -> tuple[str, ...]:
    """The program's inputs: ids and mask, and for sentence pairs the segment ids when the tokenizer makes them
    (BERT-style cross-encoders tell the two texts apart by them; RoBERTa-style ones by separators only)."""
    paired = any(rows.paired or rows.choice_count for rows in splits.values())
    segments = paired and "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    return ("input_ids", "attention_mask", *(("token_type_ids",) if segments else ()))


def tokenized_arrays(splits: dict[str, TextSplit], tokenizer, length: int, classes: ModelClasses,
                     next_tokens: bool = False, masked_with: int | None = None) -> dict[str, np.ndarray]:
    """`<split>.input_ids`, `<split>.attention_mask` (int64, [rows, length]), `<split>.token_type_ids` for
    sentence pairs where the model reads them, and `<split>.y` for labelled splits (class names and multi-label
    lists made indices and 0/1 matrices for the model's `classes`; word tags a class per token, `token_tags`):
    the arrays an `.npz` dataset of this model would hold. `next_tokens` (a causal LM's text): every split is
    labelled with each position's next token (`next_token_labels`). `masked_with` (a masked LM's mask token id):
    a share of each row's tokens is replaced by it and every split labelled with the tokens it hid
    (`compression.masked_tokens`)."""
    arrays = {}
    names = text_input_names(splits, tokenizer)
    for name, rows in splits.items():
        # labels found in the text by the tokens' character offsets
        located = not next_tokens and masked_with is None and (rows.per_word or rows.answers)
        if located and not getattr(tokenizer, "is_fast", False):
            raise InvalidUpload("word 'tags' and answers are given to tokens by their character offsets, which only "
                                "a fast tokenizer reports: include the folder's tokenizer.json (save_pretrained of "
                                "the fast tokenizer writes it)")
        encoded = _encode(tokenizer, rows, padding="max_length", truncation=True, max_length=length,
                          return_tensors="np", return_token_type_ids="token_type_ids" in names,
                          return_offsets_mapping=located)
        for input_name in names:
            arrays[f"{name}.{input_name}"] = encoded[input_name].astype(np.int64)
            if rows.choice_count:  # [rows, choices, tokens], the input of a multiple-choice model
                arrays[f"{name}.{input_name}"] = arrays[f"{name}.{input_name}"].reshape(rows.rows, rows.choice_count,
                                                                                        length)
        if masked_with is not None:
            arrays[f"{name}.input_ids"], arrays[f"{name}.{LABEL_ARRAY}"] = masked_tokens(
                arrays[f"{name}.input_ids"], arrays[f"{name}.attention_mask"], tokenizer.all_special_ids, masked_with)
        elif next_tokens:
            arrays[f"{name}.{LABEL_ARRAY}"] = next_token_labels(arrays[f"{name}.input_ids"],
                                                                arrays[f"{name}.attention_mask"])
        elif rows.answers:
            arrays[f"{name}.{LABEL_ARRAY}"] = answer_tokens(encoded, rows.labels)
        elif rows.per_word:
            arrays[f"{name}.{LABEL_ARRAY}"] = token_tags(rows.texts, encoded["offset_mapping"],
                                                         word_tags(name, rows, classes))
        elif rows.labels:
            arrays[f"{name}.{LABEL_ARRAY}"] = label_array(name, rows, classes)
    return arrays


def next_token_labels(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """[rows, tokens] labels of a causal LM's logits: at each position the token that follows it, IGNORED_LABEL
    where none does (the last position, and before padding), so that accuracy is next-token accuracy and the
    cross-entropy the model's perplexity on the text."""
    labels = np.full(input_ids.shape, IGNORED_LABEL, np.int64)
    follows = attention_mask[:, 1:] > 0
    labels[:, :-1] = np.where(follows, input_ids[:, 1:], IGNORED_LABEL)
    return labels


def answer_tokens(encoded, spans: list[tuple[int, int] | None]) -> np.ndarray:
    """[rows, 2] token positions of each answer's start and end (the first and the last token of the context,
    `text_pair`, that overlap its characters), the labels of a reader's [rows, 2, tokens] span logits; IGNORED_LABEL
    for both where there is no answer, or the truncation cut it off."""
    labels = np.full((len(spans), 2), IGNORED_LABEL, np.int64)
    offsets = encoded["offset_mapping"]
    for row, span in enumerate(spans):
        if span is None:
            continue
        context = np.array([sequence == 1 for sequence in encoded.sequence_ids(row)])
        starts, ends = offsets[row, :, 0], offsets[row, :, 1]
        overlapping = np.flatnonzero(context & (ends > span[0]) & (starts < span[1]) & (ends > starts))
        if len(overlapping) and starts[overlapping[0]] <= span[0] and ends[overlapping[-1]] >= span[1]:
            labels[row] = overlapping[0], overlapping[-1]
    return labels


def token_tags(texts: list[str], offsets: np.ndarray, tags: list[list[int]]) -> np.ndarray:
    """[rows, tokens] class indices: each word's tag (words as `text.split()` cuts them) on the first token that
    starts in it, IGNORED_LABEL on its later sub-tokens, special tokens and padding (which span no characters), as
    transformers' token-classification recipe labels them. A word the truncation cut off has no token."""
    labels = np.full(offsets.shape[:2], IGNORED_LABEL, np.int64)
    for row, (text, row_tags) in enumerate(zip(texts, tags)):
        word_ends = np.array([match.end() for match in re.finditer(r"\S+", text)])
        starts, ends = offsets[row, :, 0], offsets[row, :, 1]
        words = np.searchsorted(word_ends, starts, side="right")  # the first word ending after the token's start
        tokens = np.flatnonzero((ends > starts) & (words < len(word_ends)))
        first = tokens[np.unique(words[tokens], return_index=True)[1]]  # each word's first token
        labels[row, first] = np.asarray(row_tags, np.int64)[words[first]]
    return labels


def folder_to_program(folder: Path, task: str, splits: dict[str, TextSplit], program_path: Path,
                      dataset_path: Path, embedding: SentenceEmbedding | None = None,
                      multi_label: bool = False) -> tuple[torch.Tensor, ...]:
    """Write the folder's model as a `.pt2` (outputting `embedding` when given) and the text as the matching
    `.npz`; returns the example inputs it was exported with (for other folders' programs of the same job).
    `multi_label`: the job declares a classifier's outputs independent labels (its config may say so itself)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    causal = task == "causal-lm"
    mask = mask_token_id(tokenizer) if task == "fill-mask" else None
    if causal:
        # Decoders count positions over every slot: padding on the left would shift each row's text.
        tokenizer.padding_side = "right"
    seq2seq = task == "seq2seq-lm"
    for rows in splits.values():
        if causal and rows.paired:
            raise InvalidUpload(PAIRS_NOT_FOR_CAUSAL_LM)
        if rows.targeted != seq2seq and (rows.targeted or rows.labels):
            raise InvalidUpload(TARGETS_NEED_SEQ2SEQ if rows.targeted else SEQ2SEQ_READS_TARGETS)
        if seq2seq and rows.paired:
            raise InvalidUpload(PAIRS_NOT_FOR_SEQ2SEQ)
        if mask is not None and rows.labels:
            raise InvalidUpload(MASKED_LM_READS_TEXT)
        if rows.labels and not causal and (task == "question-answering") != rows.answers:
            raise InvalidUpload(ANSWERS_NEED_A_READER if rows.answers else ANSWERS_NOT_READ)
        if (task == MULTIPLE_CHOICE) != bool(rows.choice_count):
            raise InvalidUpload(CHOICES_NEED_MULTIPLE_CHOICE if rows.choice_count else MULTIPLE_CHOICE_NEEDS_CHOICES)
    model = load_folder_model(folder, task, embedding)
    length = token_length(model, splits, tokenizer, embedding,
                          MAX_CAUSAL_LM_TOKENS if task in VOCABULARY_TASKS else MAX_TOKENS)
    arrays = tokenized_arrays(splits, tokenizer, length, ModelClasses.of_config(model.model.config, task, multi_label),
                              next_tokens=causal, masked_with=mask)
    names = text_input_names(splits, tokenizer)
    if seq2seq:  # the output each row's logits are read at: its target, or what the upload writes
        arrays |= text_output_arrays(model, tokenizer, splits, arrays)
        names = (*names, DECODER_INPUT)
    first = next(iter(splits))
    example = tuple(torch.from_numpy(arrays[f"{first}.{name}"][:EXAMPLE_ROWS]) for name in names)
    program = model_program(model, example)
    if getattr(program, "_report", None) is not None and program._report.failures:  # drafted: branches asserted
        check_branches_hold(program, arrays, splits, names)
    save_program(program, program_path)
    np.savez(dataset_path, **arrays)
    return example


# an array seq2seq program's audio or image, before the decoder's input
SEQ2SEQ_ARRAY_INPUTS = tuple(ARRAY_SEQ2SEQ_WRAPPERS)
BRANCH_CHECK_ROWS, BRANCH_CHECK_BATCH = 256, 32  # per split: the rows a drafted program runs on before the job


def check_branches_hold(program: torch.export.ExportedProgram, arrays: dict[str, np.ndarray], splits,
                        names: list[str]) -> None:
    """A program drafted with its example's branch (`compression.io.export_branching_model`) asserts that every
    input takes that branch: run it on the first rows of each split, so that rows taking the other branch fail
    the job here, with the reason, rather than in the middle of a stage."""
    module = program.module()
    for split in splits:
        rows = min(BRANCH_CHECK_ROWS, len(arrays[f"{split}.{names[0]}"]))
        for start in range(0, rows, BRANCH_CHECK_BATCH):
            batch = tuple(torch.from_numpy(arrays[f"{split}.{name}"][start:min(rows, start + BRANCH_CHECK_BATCH)])
                          for name in names)
            try:
                with torch.no_grad():
                    module(*batch)
            except RuntimeError as exc:
                if "Runtime assertion failed" not in str(exc):
                    raise
                raise ValueError(f"this model's forward branches on its data (such as Longformer's switch for "
                                 f"global attention); it was exported with the branch its first rows take, and rows "
                                 f"{start}-{start + len(batch[0]) - 1} of split '{split}' take another: the service "
                                 "cannot compress it from a Hugging Face folder; export it yourself "
                                 "(torch.export.export) and upload the .pt2") from exc


def model_program(model: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """A loaded folder model (`load_folder_model`) exported with a dynamic batch, its dead branches dropped; a
    forward that branches on its data (Longformer's global-attention switch) with the example's branch, asserted
    (`compression.io.export_branching_model`). A model that cannot be run on the example or exported (a
    transformers class torch.export cannot trace, such as Longformer's sequence classifier, whose global-attention
    positions size tensors by the data) is refused with a ValueError that says so, not left to fail as an
    internal error. A mixture of experts has its stacked expert tensors split into per-expert linear layers
    first (`compression.moe_experts`, and JetMoE's `compression.parallel_experts`); one whose experts are stacked
    in a layout those do not know (`stacked_experts`) is refused."""
    split_stacked_experts(model)
    split_parallel_experts(model)
    if experts := stacked_experts(model):
        raise ValueError(f"this {model.model.config.model_type} model is a mixture of experts whose experts' weights "
                         f"are stacked 3-D tensors in a layout the service does not know ({experts}); no method "
                         "here quantizes or prunes those (they work on linear and convolution layers): this "
                         "architecture is not supported")
    try:
        with torch.no_grad(), symbolic_len(model):
            program = export_branching_model(model, example)
            if written_parameters(program):
                # RWKV rescales its weights in place on its first call in eval mode: the program recorded that
                # (and would repeat it on every call, failing on weights that require grad). Once run, the model
                # holds its inference weights and its next trace has no such step.
                model(*example)
                program = export_branching_model(model, example)
        if written_parameters(program):
            raise ValueError("the model changes its own weights each time it runs")
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever tracing the user's architecture raises
        config = model.model.config
        first_line = (str(exc).strip().splitlines() or [""])[0][:400]
        raise ValueError(f"this {config.model_type} model ({type(model.model).__name__}) could not be run and "
                         f"exported with torch.export at a dynamic batch ({type(exc).__name__}: {first_line}); the "
                         "service cannot compress this architecture from a Hugging Face folder: export it "
                         "yourself (torch.export.export) and upload the .pt2") from exc
    # Branches whose output nothing reads (BERT's pooler under last_hidden_state) would only cost time and trip
    # quantizers that expect every linear to feed something (issue 10).
    program.graph_module.graph.eliminate_dead_code()
    program.graph_module.recompile()
    # ... and the weights only they read (the pooler's; a BertForPreTraining checkpoint's next-sentence head): else
    # the float program the job starts from stores them, and every stage looked smaller by their bytes
    return drop_unread_weights(program)[0]


def stacked_experts(model: torch.nn.Module) -> str | None:
    """Where a model keeps mixture-of-experts weights as one 3-D tensor per projection ([experts, out, in]) that
    `split_stacked_experts` left, e.g. 'SomeExperts.gate_up_proj'; None for a dense model."""
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() == 3 and name.endswith("proj"):
                return f"{type(module).__name__}.{name}"
    return None


def example_rows(dataset_path: Path, split: str, rows: int = 8) -> tuple[torch.Tensor, ...]:
    """The first `rows` rows of a split of the arrays `folder_to_program` (or, for a speech-seq2seq or image-to-text
    model, the audio or image and the decoder's input `compression.array_seq2seq.array_seq2seq_folder_to_program`)
    wrote, as the program's inputs."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        return tuple(torch.from_numpy(arrays[f"{split}.{name}"][:rows])
                     for name in ("input_ids", "attention_mask", "token_type_ids", *SEQ2SEQ_ARRAY_INPUTS, DECODER_INPUT)
                     if f"{split}.{name}" in arrays)
