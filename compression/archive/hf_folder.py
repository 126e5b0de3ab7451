"""A Hugging Face model folder uploaded as a `.zip` or `.tar`, checked torch-free and unpacked under the same rules.

Allowlist: `config.json` (required), `generation_config.json`, `*.safetensors` (one file, or shards with
`model.safetensors.index.json`), tokenizer files, an image model's `preprocessor_config.json` (its pixel scaling:
`pixel_scaling`), a few documentation files (never parsed nor unpacked) and sentence-transformers' settings and
weight-free modules (read for `feature-extraction`: `sentence_transformers`).
Refused with a message that says what to do: pickled weights (`.bin`, `.pt`, `.pth`, `.pkl`, `.ckpt`, ...;
convert them to safetensors), Python files and `auto_map` entries (remote code is never run), subfolders and
anything else.

- Every file is read through under the archive caps (zip CRCs checked); every JSON file is size- and depth-capped
  (`jsontext`); `config.json` names a `model_type` that the installed transformers builds for the task
  (`hf_architectures`), given by the uploader or inferred from `architectures`.
- Every safetensors header is parsed (length-capped): known dtypes, concrete shapes, each tensor's byte range
  exactly shape x itemsize, ranges contiguous from 0 and the file's real size exactly header + data; an index must
  map every tensor to a shipped shard whose header holds it, and name every shard.
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from compression.archive.errors import InvalidUpload
from compression.archive.folder import FolderArchive
from compression.archive.gpt2_names import opt_module_names, rewritten_as_opt
from compression.archive.hf_architectures import (
    ARRAY_FEATURE_TASK,
    ARRAY_TASKS,
    AUDIO_FRAMES,
    AUDIO_TASKS,
    AUDIO_XVECTOR,
    CANDIDATE_LABEL_TASKS,
    FEATURE_TASKS,
    GROUNDED_DETECTORS,
    HEAD_TASKS,
    IMAGE_EMBEDDING,
    IMAGE_MATTING,
    IMAGE_TASKS,
    IMAGE_TO_IMAGE,
    MULTIPLE_CHOICE,
    NORMAL_ESTIMATION,
    POINTMAP_ESTIMATION,
    POSE_ESTIMATION,
    QUERY_DETECTORS,
    SEQ2SEQ_TASKS,
    TASKS,
    TRIMAP_CHANNELS,
    UNSUPPORTED_DETECTOR,
    VIDEO_CLASSIFICATION,
    ZERO_SHOT_DETECTION,
    ZERO_SHOT_IMAGES,
    ZERO_SHOT_NEEDS_A_TOKENIZER,
    canonical_task,
    decoder_student,
    image_text_encoder,
    model_types_by_task,
    non_text_input,
    pretraining_classes,
    task_of_architecture,
)
from compression.archive.jsontext import parse_json
from compression.archive.limits import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.pixel_scaling import NO_SIZE, PixelScaling, processed_size, side_pair
from compression.archive.sentence_transformers import MODULES_FILE, SentenceEmbedding, sentence_embedding
from compression.archive.time_series import (
    SERIES_INPUT,
    TIME_SERIES_TASKS,
    series_config_problem,
    series_head_classes,
    series_input_shape,
    series_output,
)
from compression.archive.zipread import CHUNK_BYTES

MULTI_LABEL_PROBLEM = "multi_label_classification"  # config.json problem_type of a multi-label classifier
REGRESSION_PROBLEM = "regression"  # and of a regression head, whose labels are the values it predicts

INDEX_FILE = "model.safetensors.index.json"
PREPROCESSOR_FILE = "preprocessor_config.json"  # an image model's processor: size, rescale, mean and std
IMAGE_INPUT = "pixel_values"  # what transformers' image models take
JSON_FILES = ("config.json", "generation_config.json", INDEX_FILE, "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "added_tokens.json", "vocab.json", "chat_template.json",
              PREPROCESSOR_FILE)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json")
DOCUMENTATION_FILES = ("README.md", "LICENSE", "LICENSE.txt", "LICENSE.md", ".gitattributes")
# A sentence-transformers folder (the usual form of a sentence encoder) is a Hugging Face folder plus its own
# settings and weight-free pooling/normalisation modules in numbered subfolders. The transformer is read as any
# folder; for `feature-extraction` its JSON settings say the sentence embedding the job outputs
# (`sentence_transformers`), and they are unpacked so that the compressed folder carries them unchanged.
# Modules with weights (`2_Dense/`) change what the embeddings mean and are refused as other subfolders are.
SENTENCE_TRANSFORMERS_FILES = re.compile(r"^(modules\.json|config_sentence_transformers\.json|"
                                         r"sentence_bert_config\.json|data_config\.json|"
                                         r"\d+_(Pooling|Normalize)/(config\.json|README\.md)?)$")
# The ones read (JSON, capped) and unpacked; the rest (a module's README, data_config.json) are never parsed.
SENTENCE_TRANSFORMERS_SETTINGS = re.compile(r"^(modules\.json|config_sentence_transformers\.json|"
                                            r"sentence_bert_config\.json|\d+_(Pooling|Normalize)/config\.json)$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dat")
OTHER_FRAMEWORK_SUFFIXES = (".h5", ".msgpack", ".onnx", ".gguf", ".tflite")
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_SAFETENSORS_HEADER = 100 * 1024**2  # safetensors' own cap
_BLOCK_PATH = re.compile(r"\.\d+\.")
_LANGUAGE_MODEL = re.compile(r"(^|\.)language_model\.")  # an image-text model's text decoder (Gemma 3, Mistral 3)
# ... or, where its checkpoint names no language_model, the towers beside it (Qwen2.5-VL's `visual.blocks.0`)
_OTHER_TOWER = re.compile(r"(^|\.)(visual|vision_tower|vision_model|vision_encoder|audio_tower|audio_model|"
                          r"multi_modal_projector)\.")
EXPERT_TENSOR = re.compile(r"\.experts\.\d+\.")  # one expert's tensor in a mixture of experts' checkpoint


@dataclass
class HFFolder:
    """What an uploaded folder holds, for the API's checks and the model row."""

    model_type: str
    task: str
    architectures: list[str]
    files: dict[str, int]  # name -> bytes
    parameter_count: int
    tensors: list[str] = field(default_factory=list)
    block_linear_widths: list[int] = field(default_factory=list)  # input widths of 2-D weights inside blocks
    config: dict = field(default_factory=dict)
    saved_for: str | None = None  # the task of the class in `architectures`
    # feature-extraction of a sentence-transformers folder: the pooled (and normalized) vector it declares
    sentence_embedding: SentenceEmbedding | None = None
    max_positions: int | None = None  # tokens a learned position table holds (`learned_positions`)
    # an image model's: how its processor turns uint8 pixels into pixel_values (None: it cannot be read), and the
    # processor's settings (preprocessor_config.json) themselves
    pixel_scaling: PixelScaling | None = None
    processor: dict | None = None

    @property
    def per_expert_tensors(self) -> bool:
        """Whether the checkpoint stores a mixture of experts one expert at a time (`...experts.3.w1.weight`): a
        quantized folder of it holds its experts the same way (`compression.llm.moe`)."""
        return any(EXPERT_TENSOR.search(name) for name in self.tensors)

    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer_among(self.files)

    @staticmethod
    def tokenizer_among(files) -> bool:
        return any(name in files for name in ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model",
                                              "spiece.model", "sentencepiece.bpe.model"))

    def signature(self) -> dict:
        """A ModelSignature (JSON) of the program the worker exports from the folder, plus the folder's facts under
        "hf": inputs `input_ids`/`attention_mask` [batch, tokens] int64 (an image model's `pixel_values` [batch,
        channels, height, width] float32); the output the task gives."""
        config = self.config
        ids = [{"name": name, "shape": [None, None], "dtype": "int64"} for name in ("input_ids", "attention_mask")]
        classes = None
        if self.task == MULTIPLE_CHOICE:  # each row's choices, each read after its text: [batch, choices, tokens]
            ids = [{"name": name, "shape": [None, None, None], "dtype": "int64"} for name in ("input_ids",
                                                                                                "attention_mask")]
        if self.task in IMAGE_TASKS:  # one float input, the processor's pixel values
            ids = [{"name": IMAGE_INPUT, "shape": pixel_input_shape(self.task, config, self.processor),
                    "dtype": "float32"}]
        elif self.task in AUDIO_TASKS:  # one float input: the waveform, or a spectrogram model's features
            name, shape = audio_input(self.model_type, config)
            ids = [{"name": name, "shape": shape, "dtype": "float32"}]
        elif self.task in TIME_SERIES_TASKS:  # one float input: a window of every channel of the series
            ids = [{"name": SERIES_INPUT, "shape": series_input_shape(config), "dtype": "float32"}]
        if self.task in SEQ2SEQ_TASKS:  # the decoder's input: the output so far (`compression.seq2seq_lm`)
            ids.append({"name": "decoder_input_ids", "shape": [None, None], "dtype": "int64"})
        if self.task in ("causal-lm", "fill-mask"):  # logits over the vocabulary at every token
            output = {"name": "logits", "shape": [None, None, config.get("vocab_size")], "dtype": "float32"}
        elif self.task in SEQ2SEQ_TASKS:  # logits over the output vocabulary at each output position
            output = {"name": "logits", "shape": [None, None, output_vocabulary(config)], "dtype": "float32"}
        elif self.task in TIME_SERIES_TASKS:  # class logits, regression values or the forecast
            output, classes = series_output(self.task, config), series_head_classes(self.task)
        elif self.task == AUDIO_XVECTOR:  # a speaker embedding per recording
            output = {"name": "embeddings", "shape": [None, config.get("xvector_output_dim", 512)],
                      "dtype": "float32"}
        elif self.task == AUDIO_FRAMES:  # class logits at each audio frame, whose count the recording's length gives
            labels = class_count(config)
            output = {"name": "logits", "shape": [None, None, labels], "dtype": "float32"}
            classes = {"names": ordered_label_names(config.get("id2label"), labels), "multi_label": False,
                       "regression": False}
        elif self.task == "speech-recognition":  # CTC logits over the vocabulary at each audio frame
            output = {"name": "logits", "shape": [None, None, config.get("vocab_size")], "dtype": "float32"}
        elif self.task == "image-feature-extraction" and image_text_encoder(self.model_type):
            # CLIP's, SigLIP's image embedding, in the space the text embeddings share
            output = {"name": IMAGE_EMBEDDING, "shape": [None, image_embedding_size(config)], "dtype": "float32"}
        elif self.task in ARRAY_FEATURE_TASK.values():  # the base model's features, whose shape the config tells
            output = {"name": "last_hidden_state", "shape": feature_map_shape(config), "dtype": "float32"}
        elif self.task == ZERO_SHOT_DETECTION:  # each patch's score per candidate label (their count the job's), box
            output = {"name": "detections", "shape": [None, None, None], "dtype": "float32"}
        elif self.task == ZERO_SHOT_IMAGES:  # a score per candidate label, whose count the job gives
            output = {"name": "logits_per_image", "shape": [None, None], "dtype": "float32"}
        elif self.task in (NORMAL_ESTIMATION, POINTMAP_ESTIMATION):  # each pixel's unit normal, or 3-D point
            name = "normals" if self.task == NORMAL_ESTIMATION else "pointmaps"
            output = {"name": name, "shape": [None, 3, None, None], "dtype": "float32"}
        elif self.task == IMAGE_MATTING:  # each pixel's foreground opacity
            output = {"name": "alphas", "shape": [None, 1, None, None], "dtype": "float32"}
        elif self.task == POSE_ESTIMATION:  # each keypoint's heatmap, its positions flattened
            output = {"name": "heatmaps", "shape": [None, class_count(config), None], "dtype": "float32"}
        elif self.task == IMAGE_TO_IMAGE:  # the image it makes (upscaled, restored)
            channels = config.get("num_channels_out") or ids[0]["shape"][1]
            output = {"name": "reconstruction", "shape": [None, channels, None, None], "dtype": "float32"}
        elif self.task == "depth-estimation":  # a depth per pixel of the model's output map
            output = {"name": "predicted_depth", "shape": [None, None, None], "dtype": "float32"}
        elif self.task == "object-detection":  # each object query's class scores, then its box
            labels = class_count(config)
            output = {"name": "detections", "shape": [None, None, labels + 4], "dtype": "float32"}
            classes = {"names": ordered_label_names(config.get("id2label"), labels), "multi_label": False,
                       "regression": False}
        elif self.task == "semantic-segmentation":  # class logits at each pixel of the output map, channels last
            labels = class_count(config)
            output = {"name": "logits", "shape": [None, None, None, labels], "dtype": "float32"}
            classes = {"names": ordered_label_names(config.get("id2label"), labels), "multi_label": False,
                       "regression": False}
        elif self.task in ("sequence-classification", *ARRAY_TASKS):
            labels = class_count(config)
            output = {"name": "logits", "shape": [None, labels], "dtype": "float32"}
            # What a .jsonl's class names and label lists are checked against at submission (text_labels).
            classes = {"names": ordered_label_names(config.get("id2label"), labels),
                       "multi_label": config.get("problem_type") == MULTI_LABEL_PROBLEM,
                       "regression": config.get("problem_type") == REGRESSION_PROBLEM}
        elif self.task == MULTIPLE_CHOICE:  # a logit per choice, whose count the dataset gives
            output = {"name": "logits", "shape": [None, None], "dtype": "float32"}
        elif self.task == "question-answering":  # the answer span's start and end logits over the tokens
            output = {"name": "span_logits", "shape": [None, 2, None], "dtype": "float32"}
        elif self.task == "token-classification":  # a class per token (an NER tagger's B-PER, I-PER, O, ...)
            labels = class_count(config)
            output = {"name": "logits", "shape": [None, None, labels], "dtype": "float32"}
            classes = {"names": ordered_label_names(config.get("id2label"), labels), "multi_label": False,
                       "regression": False}
        elif self.sentence_embedding is not None:  # the default; a job may ask for the token vectors instead
            output = {"name": "sentence_embedding", "shape": [None, _hidden_size(config)], "dtype": "float32"}
        else:
            output = {"name": "last_hidden_state", "shape": [None, None, _hidden_size(config)], "dtype": "float32"}
        layers = sorted({name.rsplit(".", 1)[0] for name in self.tensors if "." in name})
        # The exported program wraps the model as `model`; a head checkpoint loaded as its base model has other
        # names than its file, and then the worker checks layer patterns instead of the API.
        # A GPT-2 folder's jobs run its OPT rewrite (`gpt2_names`), whose module names the program has.
        modules = opt_module_names(layers, self.task) if rewritten_as_opt(config, self.task) else layers
        # A mixture of experts' program runs each expert as its own linear layers (`compression.moe_experts`),
        # named by neither the stacked nor the older per-expert checkpoint layout: the worker checks those.
        same_names = self.saved_for == self.task and not any(".experts." in name for name in self.tensors)
        program_layers = [f"model.{layer}" for layer in modules] if same_names else []
        extra = {}
        if self.task == "causal-lm":  # llm_ptq names the checkpoint's layers, the other methods the program's
            extra = {"program_layers": program_layers}
        else:
            layers = program_layers
        return {"inputs": ids, "outputs": [output], "parameter_count": self.parameter_count, "torch_version": None,
                "layers": layers, **extra, "hf": {"model_type": self.model_type, "task": self.task,
                                         "architectures": self.architectures, "files": sorted(self.files),
                                         "has_tokenizer": self.has_tokenizer,
                                         "block_linear_widths": self.block_linear_widths,
                                         # what a 'layers' student keeps some of: a
                                         # seq2seq-lm model's decoder layers
                                         "num_hidden_layers": _student_layer_count(self.task, config),
                                         "max_positions": self.max_positions,
                                         "per_expert_tensors": self.per_expert_tensors,
                                         "classes": classes,
                                         "sentence_embedding": self.sentence_embedding and
                                         self.sentence_embedding.to_metrics(),
                                         "pixel_scaling": self.pixel_scaling and self.pixel_scaling.to_json()}}


# Audio models that read spectrogram features, not the waveform: the input's name and its shape from the
# config (AST's frames x mel bins; Whisper's mel bins x its fixed 30 s of frames; w2v-BERT's stacked fbank frames).
SPECTROGRAM_INPUTS = {
    "audio-spectrogram-transformer": ("input_values", lambda c: [None, c.get("max_length"), c.get("num_mel_bins")]),
    "whisper": ("input_features", lambda c: [None, c.get("num_mel_bins"), _times(c.get("max_source_positions"), 2)]),
    "wav2vec2-bert": ("input_features", lambda c: [None, None, c.get("feature_projection_input_dim")]),
    # Speech2Text's filter banks [batch, frames, features x channels]
    "speech_to_text": ("input_features", lambda c: [None, None, _times(c.get("input_feat_per_channel"),
                                                                       c.get("input_channels"))]),
    # CTC recognizers of log-mel frames [batch, frames, mel bins], the bins set in their encoder's config (and the
    # encoder-decoders with a Parakeet encoder: Canary, Cohere ASR); Granite Speech's frames are each concatenated
    # with their deltas and stacked in pairs (4 x the bins)
    **{model_type: ("input_features", lambda c: [None, None, _encoder_bins(c)])
       for model_type in ("parakeet_ctc", "lasr_ctc", "canary", "cohere_asr")},
    "granite_speech5_ctc": ("input_features", lambda c: [None, None, _times(_encoder_bins(c), 4)]),
}
WAVEFORM_INPUT = "input_values"
# Waveform models whose feature extractor gives each waveform a channel dimension, [batch, 1, samples]
# (Omnilingual ASR); a [batch, samples] array gets it when the job runs, as a mono signal does for a .pt2.
CHANNEL_WAVEFORMS = ("omniasr_ctc",)


def audio_input(model_type: str, config: dict) -> tuple[str, list[int | None]]:
    """The input name and shape of an audio model: [batch, samples] of the waveform (wav2vec2, HuBERT, WavLM,
    ...), or a spectrogram model's features."""
    if model_type in CHANNEL_WAVEFORMS:
        return WAVEFORM_INPUT, [None, 1, None]
    if model_type not in SPECTROGRAM_INPUTS:
        return WAVEFORM_INPUT, [None, None]
    name, shape = SPECTROGRAM_INPUTS[model_type]
    return name, [side if type(side) is int and side > 0 else None for side in shape(config)]


def output_vocabulary(config: dict) -> int | None:
    """The tokens an encoder-decoder writes: its vocabulary, Marian's own target vocabulary where the encoder's
    and decoder's tables are not shared, or a VisionEncoderDecoderModel's decoder's."""
    if config.get("share_encoder_decoder_embeddings") is False and config.get("decoder_vocab_size"):
        return config["decoder_vocab_size"]
    if isinstance(config.get("decoder"), dict):  # a VisionEncoderDecoderModel's text decoder
        return config["decoder"].get("vocab_size")
    return config.get("vocab_size")


def _times(value, factor) -> int | None:
    """value x factor where both are ints (config fields), else None (the size left open)."""
    return factor * value if type(value) is int and type(factor) is int else None


def _encoder_bins(config: dict) -> int | None:
    return (config.get("encoder_config") or {}).get("num_mel_bins")


def image_input_shape(config: dict, processor: dict | None = None) -> list[int | None]:
    """[batch, channels, height, width] of an image model's pixel_values: the config's `num_channels` (3 unless it
    says otherwise) and the size its image processor gives the model (`processed_size`), else the config's
    `image_size` (a ViT's patch grid and position table are built for it); a convolutional network (ResNet,
    ConvNeXt, ...) whose processor resizes by the shortest edge takes any size."""
    # a dual encoder's (CLIP's) vision tower's, a VisionEncoderDecoderModel's encoder's
    towers = [config.get(name) for name in ("vision_config", "encoder")]
    config = {key: value for tower in towers if isinstance(tower, dict) for key, value in tower.items()} | config
    channels = config.get("num_channels")
    size = processed_size(processor) if isinstance(processor, dict) else side_pair(config.get("image_size"))
    if size is NO_SIZE:
        size = side_pair(config.get("image_size"))
    return [None, channels if type(channels) is int and channels > 0 else 3, *(size or [None, None])]


def pixel_input_shape(task: str, config: dict, processor: dict | None = None) -> list[int | None]:
    """The pixel values an image task's model takes (`image_input_shape`), or a video classifier's clips of them,
    [batch, frames, channels, height, width]: the config's `num_frames` (V-JEPA 2's `frames_per_clip`), each frame
    scaled as an image, at the processor's size or the config's `image_size` (V-JEPA 2's `crop_size`)."""
    if task == IMAGE_TO_IMAGE:  # a restorer pads any image to its window (Swin2SR), and keeps its size
        return image_input_shape(config, processor)[:2] + [None, None]
    if task == IMAGE_MATTING and reads_trimap(config):  # the image and its trimap, of any size (ViTMatte's
        # processor pads it to its divisor); a matting model of the image alone (Sapiens 2) takes it as others do
        return [None, 3 + TRIMAP_CHANNELS, None, None]
    if task == POSE_ESTIMATION:  # ViTPose's crop size is its backbone's
        backbone = config.get("backbone_config") if isinstance(config.get("backbone_config"), dict) else {}
        return image_input_shape({"image_size": backbone.get("image_size")} | config, processor)
    if task != VIDEO_CLASSIFICATION:
        return image_input_shape(config, processor)
    frames = config.get("num_frames") or config.get("frames_per_clip")
    _, channels, *size = image_input_shape({"image_size": config.get("crop_size")} | config, processor)
    return [None, frames if type(frames) is int and frames > 0 else None, channels, *size]


def reads_trimap(config: dict) -> bool:
    """Whether an image matting model reads a trimap after the image's channels (ViTMatte: its backbone's
    num_channels is 4), rather than the image alone (Sapiens 2)."""
    backbone = config.get("backbone_config")
    channels = (backbone if isinstance(backbone, dict) else config).get("num_channels")
    return channels == 3 + TRIMAP_CHANNELS


def class_count(config: dict) -> int:
    """A sequence classifier's classes as its config.json gives them (transformers' default: 2)."""
    return len(config.get("id2label") or {}) or config.get("num_labels") or 2


def ordered_label_names(id2label: dict | None, classes: int) -> list[str] | None:
    """The model's class names in index order (config.json's keys are strings, a loaded config's are ints); None
    where the config does not name every class."""
    if not isinstance(id2label, dict):
        return None
    by_index = {}
    for key, name in id2label.items():
        try:
            by_index[int(key)] = str(name)
        except (TypeError, ValueError):
            return None
    names = [by_index.get(index) for index in range(classes)]
    return None if None in names else names


# The sub-configs that hold the layer count of a model whose own config does not (Parakeet's, LASR's and Granite
# Speech's conformer encoder; Omnilingual ASR's audio tower).
LAYER_SUBCONFIGS = ("encoder_config", "audio_config")


def layer_count_section(config: dict) -> str | None:
    """Where the config (as a dict) keeps the encoder's layer count `num_hidden_layers`: "" for the config itself,
    else the one sub-config of LAYER_SUBCONFIGS that does; None where none does."""
    if type(config.get("num_hidden_layers")) is int:
        return ""
    holders = [name for name in LAYER_SUBCONFIGS if isinstance(config.get(name), dict)
               and type(config[name].get("num_hidden_layers")) is int]
    return holders[0] if len(holders) == 1 else None


def _student_layer_count(task: str, config: dict) -> int | None:
    if not decoder_student(task, config.get("model_type")):
        return _layer_count(config)
    section, field = decoder_layer_place(config)
    return None if field is None else (config[section] if section else config)[field]


def _layer_count(config: dict) -> int | None:
    """The encoder's layer count as transformers' configs name it (what a 'layers' student keeps some of)."""
    section = layer_count_section(config)
    return None if section is None else (config[section] if section else config)["num_hidden_layers"]


# Where encoder-decoder configs keep the decoder's layer count (T5's and ProphetNet's; BART's, Marian's, Pegasus',
# Whisper's...; Moonshine's)
DECODER_LAYER_FIELDS = ("num_decoder_layers", "decoder_layers", "decoder_num_hidden_layers")


def decoder_layer_field(config: dict) -> str | None:
    """The config field (as a dict) that holds an encoder-decoder's decoder layer count, or None."""
    return next((name for name in DECODER_LAYER_FIELDS if type(config.get(name)) is int), None)


# A VisionEncoderDecoderModel's decoder is a causal LM with a config of its own, under `decoder`, whose layer count
# is its decoder field (TrOCR's, BART's decoder_layers) or its layer count (BERT's num_hidden_layers, GPT-2's n_layer).
NESTED_DECODER = "decoder"
NESTED_DECODER_FIELDS = (*DECODER_LAYER_FIELDS, "num_hidden_layers", "n_layer")


def decoder_layer_place(config: dict) -> tuple[str, str | None]:
    """Where the config (as a dict) keeps the decoder's layer count: ("", field) for the config itself,
    (NESTED_DECODER, field) for a nested decoder's config; the field None where neither holds one."""
    if (field := decoder_layer_field(config)) is not None or not isinstance(config.get(NESTED_DECODER), dict):
        return "", field
    nested = config[NESTED_DECODER]
    return NESTED_DECODER, next((name for name in NESTED_DECODER_FIELDS if type(nested.get(name)) is int), None)


def max_positions(config: dict) -> int | None:
    """The longest token sequence the config says the model was built for."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        if type(config.get(key)) is int:
            return config[key]
    return None


def learned_positions(config: dict, shapes: list[list[int]]) -> int | None:
    """The config's positions when the weights hold a learned position table (GPT-2's `wpe`, OPT's
    `embed_positions`: its positions plus at most 2 offset rows), which longer sequences index past; None for
    rotary or ALiBi models, which run on longer ones."""
    positions = max_positions(config)
    if positions is None:
        return None
    rows = {shape[0] for shape in shapes if len(shape) == 2 and shape[0] != config.get("vocab_size")}
    return positions if any(positions <= count <= positions + 2 for count in rows) else None


def image_embedding_size(config: dict) -> int | None:
    """The width of an image-text dual encoder's image embedding: its projection's (CLIP's `projection_dim`), else
    the vision tower's hidden size (SigLIP, ALIGN: no projection)."""
    if isinstance(config.get("projection_dim"), int):
        return config["projection_dim"]
    vision = config.get("vision_config")
    return _hidden_size(vision) if isinstance(vision, dict) else None


def feature_map_shape(config: dict) -> list:
    """The shape of an image or audio base model's `last_hidden_state` as its config tells it: a transformer's
    vectors [batch, tokens (or frames), hidden_size]; a convolutional network's (config `hidden_sizes`, one per
    stage) feature map [batch, channels of the last stage, height, width]. The sizes a config does not give stay
    None; the worker measures the output itself."""
    stages = config.get("hidden_sizes")
    if isinstance(stages, list) and stages and isinstance(stages[-1], int):
        return [None, stages[-1], None, None]
    return [None, None, _hidden_size(config)]


def _hidden_size(config: dict) -> int | None:
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def read_hf_folder(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS,
                   task: str | None = None, extract_to: Path | None = None) -> HFFolder:
    """Check every rule above; with `extract_to`, also write the folder's files there (documentation skipped)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            return read_hf_folder(file, limits, task, extract_to)
    with FolderArchive(source, limits, "the model folder") as archive:
        _check_names(archive.files)
        documents = {name: parse_json(archive.read(name, limits.max_metadata_bytes), name, limits)
                     for name in JSON_FILES if name in archive.files}
        for name in ("config.json", "tokenizer_config.json"):
            if "auto_map" in documents.get(name, {}):
                raise InvalidUpload(f"{name} has an 'auto_map': it asks for the model's own Python code, which is "
                                    "never run; upload a model whose architecture transformers ships")
        config = documents["config.json"]
        model_type, chosen_task, architectures, saved_for = _check_config(config, task)
        embedding = _sentence_embedding(archive, limits) if chosen_task == "feature-extraction" else None
        headers, sizes = {}, {}
        for name in sorted(archive.files):
            # Every file is read through under the caps, so a bomb or a damaged member is refused here, not later.
            if name.endswith(".safetensors"):
                headers[name], sizes[name] = _check_safetensors(archive, name, limits)
            else:
                sizes[name] = archive.count(name)
        _check_index(documents.get(INDEX_FILE), headers)
        if extract_to is not None:
            extract_to.mkdir(parents=True, exist_ok=True)
            for name in archive.files:
                if not _skipped(name) or (embedding is not None and SENTENCE_TRANSFORMERS_SETTINGS.match(name)):
                    (extract_to / name).parent.mkdir(parents=True, exist_ok=True)
                    sizes[name] = archive.copy_to(name, extract_to / name)
    tensors = [key for header in headers.values() for key in header if key != "__metadata__"]
    # A numbered path component (`model.layers.3.mlp.down_proj.weight`) marks a block: what group sizes must divide;
    # of an image-text model, only its language model's blocks (llm_ptq leaves the vision tower float).
    language = [key for key in tensors if _LANGUAGE_MODEL.search(key)]
    widths = sorted({header[key]["shape"][1] for header in headers.values() for key in header
                     if key.endswith(".weight") and _BLOCK_PATH.search(key) and len(header[key]["shape"]) == 2
                     and (_LANGUAGE_MODEL.search(key) if language else not _OTHER_TOWER.search(key))})
    parameters = sum(math.prod(header[key]["shape"]) for header in headers.values()
                     for key in header if key != "__metadata__")
    shapes = [header[key]["shape"] for header in headers.values() for key in header if key != "__metadata__"]
    if chosen_task in CANDIDATE_LABEL_TASKS and not HFFolder.tokenizer_among(sizes):
        raise InvalidUpload(ZERO_SHOT_NEEDS_A_TOKENIZER.format(task=chosen_task))
    processor = documents.get(PREPROCESSOR_FILE) if chosen_task in ARRAY_TASKS else None
    scaling = PixelScaling.from_processor(processor) if chosen_task in IMAGE_TASKS else None
    return HFFolder(model_type, chosen_task, architectures, sizes, parameters, tensors, widths, config, saved_for,
                    embedding, learned_positions(config, shapes), scaling, processor)


def _sentence_embedding(archive: FolderArchive, limits: ArchiveLimits) -> SentenceEmbedding | None:
    """What modules.json and the module configs declare (their JSON capped like every document), or None."""
    if MODULES_FILE not in archive.files:
        return None
    documents = {name: parse_json(archive.read(name, limits.max_metadata_bytes), name, limits)
                 for name in archive.files if SENTENCE_TRANSFORMERS_SETTINGS.match(name) and name != MODULES_FILE}
    modules = parse_json(archive.read(MODULES_FILE, limits.max_metadata_bytes), MODULES_FILE, limits, expect=list)
    return sentence_embedding(modules, documents)


def _skipped(name: str) -> bool:
    """Files that are accepted but never parsed nor unpacked."""
    return name in DOCUMENTATION_FILES or bool(SENTENCE_TRANSFORMERS_FILES.match(name))


def _check_names(files: dict[str, str]) -> None:
    """Refuse what is not read, naming every such file at once: a snapshot of a model repository often holds
    several (pytorch_model.bin, tf_model.h5, onnx/, train_script.py), and one refusal per upload would take as many
    uploads to find them all."""
    if "config.json" not in files:
        raise InvalidUpload("the model folder has no config.json; zip or tar the folder written by "
                            "save_pretrained (config.json, *.safetensors and the tokenizer files)")
    found: dict[str, list[str]] = {}
    for name in sorted(files):
        problem = _name_problem(name)
        if problem:
            found.setdefault(problem, []).append(name)
    if found:
        raise InvalidUpload("; ".join(f"{_listed(names)}: {problem}" for problem, names in found.items()))
    if not any(name.endswith(".safetensors") for name in files):
        raise InvalidUpload("the model folder has no *.safetensors weights; save it with "
                            "save_pretrained(folder, safe_serialization=True)")


def _name_problem(name: str) -> str | None:
    """What is wrong with the file `name` in an upload and what to do (one message per kind of file), or None."""
    lower = name.lower()
    if _skipped(name):
        return None
    if "/" in name:
        return ("files in a subfolder: only the files save_pretrained writes at the top level are read; remove "
                "the subfolders")
    if lower.endswith(PICKLE_SUFFIXES):
        return ("pickled checkpoints, which are never loaded: convert the weights to safetensors "
                "(model.save_pretrained(folder, safe_serialization=True)) and upload the folder without them")
    if lower.endswith(".py"):
        return ("Python code: remote code is never run; upload a model whose architecture transformers ships, "
                "without .py files")
    if lower.endswith(OTHER_FRAMEWORK_SUFFIXES):
        return "weights of other frameworks, not PyTorch safetensors: upload the safetensors weights only"
    if not (name.endswith(".safetensors") or name in JSON_FILES or name in TOKENIZER_FILES
            or name in DOCUMENTATION_FILES):
        return (f"files that are not part of a Hugging Face model folder as modelpress reads it (config.json, "
                f"*.safetensors, {INDEX_FILE}, generation_config.json, {PREPROCESSOR_FILE} and tokenizer files); "
                "remove them")
    return None


def _listed(names: list[str], shown: int = 8) -> str:
    quoted = ", ".join(f"'{name}'" for name in names[:shown])
    return quoted + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _check_default_language(model_type: str, config: dict) -> None:
    """X-MOD runs one language adapter per input, chosen by `lang_ids`, which the job's inputs (`input_ids`,
    `attention_mask`) do not carry: it runs its config's `default_language`, and without one it cannot run."""
    if model_type != "xmod":
        return
    languages = config.get("languages") or []
    if config.get("default_language") not in languages:
        raise InvalidUpload(f"an X-MOD model picks its language adapter from config.json 'default_language', which "
                            f"is {config.get('default_language')!r}: set it to one of its languages {languages} "
                            "(model.set_default_language(...) before save_pretrained)")


def _check_float_weights(config: dict) -> None:
    """A checkpoint already quantized (a `quantization_config`, top level or in an image-text model's language
    config) is refused: its packed codes do not export and quantizing them again compounds the error. It was
    accepted and failed in the job ("could not be run and exported with torch.export ... Cannot access data
    pointer"), or in llm_ptq's first step."""
    for where, document in (("config.json", config), ("config.json text_config", config.get("text_config"))):
        quantization = document.get("quantization_config") if isinstance(document, dict) else None
        if not quantization:
            continue
        method = quantization.get("quant_method", "unnamed") if isinstance(quantization, dict) else "unnamed"
        hint = (" (gpt-oss ships its experts in MXFP4 only: load it with transformers' "
                "Mxfp4Config(dequantize=True) and save_pretrained the bfloat16 model)" if method == "mxfp4" else "")
        raise InvalidUpload(f"{where} has a quantization_config (quant_method '{method}'): the weights are already "
                            "quantized, and modelpress compresses float checkpoints (quantizing the codes again "
                            "compounds the error); upload the model's float checkpoint (float32, bfloat16 or "
                            f"float16){hint}")


def _check_config(config: dict, task: str | None) -> tuple[str, str, list[str], str | None]:
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise InvalidUpload("config.json has no 'model_type' string; save the model with save_pretrained")
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise InvalidUpload("config.json 'architectures' must be a list of class names")
    tables = model_types_by_task()
    if not any(model_type in table for table in tables.values()):
        raise InvalidUpload(f"config.json model_type '{model_type}' is not an architecture the installed "
                            "transformers ships (remote code is never run)")
    task = canonical_task(task, model_type, architectures)
    _check_default_language(model_type, config)
    _check_float_weights(config)
    saved_for = next((t for t in map(task_of_architecture, architectures) if t), None)
    if task in tables and any(name in tables[task].values() for name in architectures):
        saved_for = task  # a class transformers builds for several tasks (XLMWithLMHeadModel: causal and masked LM)
    pretraining = set(pretraining_classes().values())
    reads = non_text_input(model_type)
    features = ARRAY_FEATURE_TASK.get(reads)
    if features is not None and model_type in tables[features] and task in (None, "feature-extraction") \
            and (task is not None or saved_for in (None, "feature-extraction")):
        # A base image or audio model (Dinov2Model, Wav2Vec2Model): its features are what it is used for, read
        # from an .npz of images or waveforms; "feature-extraction" of it means the same.
        task = features
    if features is not None and model_type in tables[features] and saved_for == "feature-extraction":
        saved_for = features  # what its weights can do, said in the refusal of a head they lack
    if reads is not None and (task or saved_for) not in ARRAY_TASKS:
        heads = [name for name in ARRAY_TASKS if model_type in tables[name]]
        raise InvalidUpload(f"model_type '{model_type}' reads {reads}, not text: a Hugging Face folder is read as a "
                            "text model (its tokenizer turns a .jsonl dataset into its inputs)"
                            + (f" or as an image, audio or time-series model (task {' or '.join(heads)}, with an "
                               ".npz of its input)" if heads else "")
                            + "; or export this model with torch.export and upload the .pt2, with an .npz of the "
                            "arrays it takes")
    if task is None:
        if saved_for in (None, "fill-mask") and architectures and model_type in tables["feature-extraction"]:
            # A pretrained encoder's checkpoint (BertForMaskedLM, as bert-base-uncased is saved; BertForPreTraining)
            # is mostly taken for its base model's hidden states, as transformers' feature-extraction pipeline
            # reads it; its masked-LM head is compressed on request (task fill-mask).
            saved_for = "feature-extraction"
        if saved_for is None:
            raise InvalidUpload(f"cannot tell the task from config.json architectures {architectures}; give it "
                                f"(task: one of {list(TASKS)})")
        task = saved_for
    if task not in TASKS:
        raise InvalidUpload(f"task '{task}' is not one of {list(TASKS)}")
    if model_type not in tables[task]:
        raise InvalidUpload(f"transformers has no {task} model for model_type '{model_type}'; choose a task it "
                            f"can do ({[t for t in TASKS if model_type in tables[t]]})")
    # A head checkpoint can serve as its base model, but a head the weights lack would be random.
    if task not in FEATURE_TASKS and saved_for is not None and saved_for != task:
        raise InvalidUpload(f"the weights were saved for {saved_for} ({architectures[0]}), which has no trained "
                            f"{task} head; upload a checkpoint saved for {task} or choose task '{saved_for}'")
    if task in SEQ2SEQ_TASKS and isinstance(config.get("text_config"), dict):
        # transformers lists audio language models (Qwen2-Audio, Voxtral, Granite Speech) for seq2seq generation
        # (and for speech seq2seq) too: a text model behind an audio encoder, which takes no decoder input
        nested = sorted(key for key, value in config.items() if isinstance(value, dict) and key.endswith("_config"))
        runs = ("encoder-decoders that write text for a text (T5, BART, Marian, ...)" if task == "seq2seq-lm" else
                "encoder-decoders that write text for audio (Whisper, Speech2Text, Moonshine, ...)")
        raise InvalidUpload(f"model_type '{model_type}' is a language model that reads more than text (config.json "
                            f"nests {nested}); task {task} runs {runs}: export this model with torch.export and "
                            "upload the .pt2")
    if task == "speech-seq2seq" and config.get("is_encoder_decoder") is not True:
        # (Kyutai's speech-to-text is a decoder over audio codes: no encoder reads the audio, no decoder input)
        raise InvalidUpload(f"model_type '{model_type}' is not an encoder-decoder (config.json is_encoder_decoder): "
                            "task speech-seq2seq runs encoder-decoders that write text for audio (Whisper, "
                            "Speech2Text, Moonshine, ...): export this model with torch.export and upload the .pt2")
    if task == "fill-mask" and saved_for is None and any(name in pretraining for name in architectures):
        # BertForPreTraining, AlbertForPreTraining, ...: a masked-LM head beside another (next-sentence prediction);
        # one without it (ElectraForPreTraining, a discriminator) is refused when the worker loads it
        saved_for = task
    if task == ZERO_SHOT_DETECTION and model_type not in (*QUERY_DETECTORS, *GROUNDED_DETECTORS):
        raise InvalidUpload(UNSUPPORTED_DETECTOR.format(model_type=model_type))
    if task in TIME_SERIES_TASKS and (problem := series_config_problem(task, model_type, config)):
        raise InvalidUpload(problem)
    if task in HEAD_TASKS and architectures and saved_for != task:
        base = ARRAY_FEATURE_TASK.get(reads, "feature-extraction")
        raise InvalidUpload(f"the weights were saved as {architectures[0]}, which has no trained {task} head (it "
                            f"would start random); upload a checkpoint saved for {task} or choose task '{base}'")
    return model_type, task, architectures, saved_for


def _check_safetensors(archive: FolderArchive, name: str, limits: ArchiveLimits) -> tuple[dict, int]:
    with archive.open(name) as member:
        prefix = member.read_exactly(8)
        if len(prefix) < 8:
            raise InvalidUpload(f"'{name}' is too short to be a safetensors file")
        length = int.from_bytes(prefix, "little")
        if length > min(MAX_SAFETENSORS_HEADER, limits.max_metadata_bytes):
            raise InvalidUpload(f"'{name}' claims a {length}-byte header; the limit is "
                                f"{min(MAX_SAFETENSORS_HEADER, limits.max_metadata_bytes)}")
        raw = member.read_exactly(length)
        if len(raw) < length:
            raise InvalidUpload(f"'{name}' is truncated inside its header")
        header = parse_json(raw, f"'{name}' header", limits)
        data_bytes = 0
        while chunk := member.read(CHUNK_BYTES):
            data_bytes += len(chunk)
    ranges = []
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise InvalidUpload(f"'{name}': __metadata__ must map strings to strings")
            continue
        ranges.append(_tensor_range(name, key, entry))
    end = 0
    for begin, finish, key in sorted(ranges):
        if begin != end:
            raise InvalidUpload(f"'{name}': tensor '{key}' starts at byte {begin}, not {end}: the data has gaps or "
                                "overlaps")
        end = finish
    if data_bytes != end:
        raise InvalidUpload(f"'{name}' holds {data_bytes} bytes of tensor data but its header describes {end}; "
                            "the file is damaged or truncated")
    return header, 8 + length + data_bytes


def _tensor_range(name: str, key: str, entry) -> tuple[int, int, str]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise InvalidUpload(f"'{name}': tensor '{key}' needs exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise InvalidUpload(f"'{name}': tensor '{key}' has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise InvalidUpload(f"'{name}': tensor '{key}' has a shape that is not a list of sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise InvalidUpload(f"'{name}': tensor '{key}' has invalid data_offsets {offsets}")
    if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype]:
        raise InvalidUpload(f"'{name}': tensor '{key}' spans {offsets[1] - offsets[0]} bytes but its shape "
                            f"{shape} {dtype} needs {math.prod(shape) * SAFETENSORS_DTYPES[dtype]}")
    return offsets[0], offsets[1], key


def _check_index(index: dict | None, headers: dict[str, dict]) -> None:
    if index is None:
        if len(headers) > 1:
            raise InvalidUpload(f"the folder has {len(headers)} safetensors shards but no {INDEX_FILE}")
        return
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InvalidUpload(f"{INDEX_FILE} needs a 'weight_map' of tensor name -> shard file")
    for tensor, shard in weight_map.items():
        if shard not in headers:
            raise InvalidUpload(f"{INDEX_FILE} maps '{tensor}' to '{shard}', which is not in the folder")
        if tensor not in headers[shard]:
            raise InvalidUpload(f"{INDEX_FILE} maps '{tensor}' to '{shard}', whose header has no such tensor")
    unused = sorted(set(headers) - set(weight_map.values()))
    if unused:
        raise InvalidUpload(f"{INDEX_FILE} does not name the shard(s) {unused}; remove them or fix the index")


def copy_side_files(source: Path, destination: Path) -> None:
    """Copy what an extracted folder holds beside its weights and config (tokenizer, generation settings,
    sentence-transformers settings and module folders) into a folder written from its model."""
    for path in source.iterdir():
        if path.is_dir():
            shutil.copytree(path, destination / path.name, dirs_exist_ok=True)
        elif path.name not in ("config.json", INDEX_FILE) and path.suffix != ".safetensors":
            shutil.copy2(path, destination / path.name)
