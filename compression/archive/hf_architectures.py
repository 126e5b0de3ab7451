"""Which `model_type`s the installed `transformers` can build for each task, known without importing it.

Importing `transformers.models.auto` imports torch, which the API never does. The mappings the Auto classes use
are plain literals in `modeling_auto.py` (`MODEL_MAPPING_NAMES` and the per-task ones), so they are read from the
installed package's source with `ast.literal_eval`: the answer follows the installed version, and nothing runs.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

from compression.archive.jsonl import MAX_WRITTEN_ROWS
from compression.archive.time_series import (
    FORECAST_LABELS,
    FORECASTERS,
    TIME_SERIES_TASKS,
    TS_CLASSIFICATION,
    TS_FORECASTING,
    TS_REGRESSION,
)
from compression.segmenter_class import MASK_SEGMENTERS

IMAGE_TEXT_TO_TEXT = "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"
IMAGE_TEXT_ENCODERS = "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES"
ZERO_SHOT_IMAGES = "zero-shot-image-classification"
# an open-vocabulary detector (OWL-ViT, OWLv2, Grounding DINO): each patch's or object query's box, scored against
# text queries the job names
# (`compression.zero_shot_detection`)
ZERO_SHOT_DETECTION = "zero-shot-object-detection"
MULTIPLE_CHOICE = "multiple-choice"
VIDEO_CLASSIFICATION = "video-classification"
AUDIO_XVECTOR = "audio-xvector"
IMAGE_TO_IMAGE = "image-to-image"
POSE_ESTIMATION = "pose-estimation"
# an image matting model (ViTMatte): an image and its trimap (known foreground, background and the unknown band
# between) as four channels -> the alpha matte, each pixel's foreground opacity in [0, 1]
IMAGE_MATTING = "image-matting"
# a surface normal estimator (Sapiens 2, TIPSv2 DPT): a unit normal per pixel of its output map
NORMAL_ESTIMATION = "normal-estimation"
# a pointmap estimator (Sapiens 2): each pixel's 3-D point, in metric coordinates (its canonical point / its scale)
POINTMAP_ESTIMATION = "pointmap-estimation"
TRIMAP_CHANNELS = 1  # after the image's: unscaled but for the processor's rescale (0, 0.5, 1)
AUDIO_FRAMES = "audio-frame-classification"
# task -> the mapping of modeling_auto.py whose model types can run it
TASK_MAPPINGS = {"feature-extraction": "MODEL_MAPPING_NAMES",
                 "sequence-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                 "token-classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
                 "question-answering": "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES",
                 # a multiple-choice model (SWAG, RACE, ARC heads): one logit per candidate, each read after the
                 # row's text as a sentence pair, [batch, choices, tokens] -> [batch, choices]
                 # (`compression.archive.choices`)
                 MULTIPLE_CHOICE: "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES",
                 # a masked language model (BERT, RoBERTa, ALBERT, DeBERTa, ModernBERT, ... as their pretrained
                 # checkpoints are saved): the logits over its vocabulary at each position, judged on the tokens the
                 # worker masks in the text (`compression.masked_tokens`)
                 "fill-mask": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
                 "image-classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
                 # a video classifier (VideoMAE, TimeSformer, ViViT, V-JEPA 2): a clip of the config's number of
                 # frames, each scaled as an image, [batch, frames, channels, height, width] -> class logits
                 VIDEO_CLASSIFICATION: "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",
                 # a semantic segmentation model (SegFormer, DPT, BEiT, MobileViT, UperNet): class logits at every
                 # pixel of its output map, channels last (`compression.segmentation`)
                 "semantic-segmentation": "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
                 # a monocular depth model (Depth Anything, DPT, GLPN, ZoeDepth): its predicted depth map
                 "depth-estimation": "MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES",
                 # an image restorer (Swin2SR: super-resolution, denoising, JPEG artifact removal): the image it
                 # makes, [batch, channels, height x upscale, width x upscale], compared whole with the original's
                 IMAGE_TO_IMAGE: "MODEL_FOR_IMAGE_TO_IMAGE_MAPPING_NAMES",
                 # a top-down pose estimator (ViTPose, Sapiens 2): a heatmap per keypoint of a person's crop, read
                 # as a distribution over the map's positions, judged by where each keypoint's peak falls
                 POSE_ESTIMATION: "MODEL_FOR_POSE_ESTIMATION_MAPPING_NAMES",
                 IMAGE_MATTING: "MODEL_FOR_IMAGE_MATTING_MAPPING_NAMES",
                 NORMAL_ESTIMATION: "MODEL_FOR_NORMAL_ESTIMATION_MAPPING_NAMES",
                 POINTMAP_ESTIMATION: "MODEL_FOR_POINTMAP_ESTIMATION_MAPPING_NAMES",
                 # an object detector (DETR, Conditional/Deformable DETR, YOLOS, RT-DETR, D-FINE, ...): a score per
                 # class and a box for each object query, judged against the original's detections
                 # (`compression.detection`)
                 "object-detection": "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
                 ZERO_SHOT_DETECTION: "MODEL_FOR_ZERO_SHOT_OBJECT_DETECTION_MAPPING_NAMES",
                 # a time-series model's head over a window of the series (PatchTST, PatchTSMixer): class logits,
                 # regression values, or the forecast of the next steps (`compression.archive.time_series`)
                 TS_CLASSIFICATION: "MODEL_FOR_TIME_SERIES_CLASSIFICATION_MAPPING_NAMES",
                 TS_REGRESSION: "MODEL_FOR_TIME_SERIES_REGRESSION_MAPPING_NAMES",
                 TS_FORECASTING: "MODEL_FOR_TIME_SERIES_PREDICTION_MAPPING_NAMES",
                 # an image-text dual encoder (CLIP, SigLIP, ALIGN, ...) choosing among the job's candidate labels:
                 # its scores of each image against their texts (`compression.zero_shot_images`)
                 ZERO_SHOT_IMAGES: IMAGE_TEXT_ENCODERS,
                 "audio-classification": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
                 # a speaker-verification head (Wav2Vec2ForXVector, WavLMForXVector: microsoft/wavlm-base-plus-sv):
                 # the x-vector of each recording, [batch, xvector_output_dim], judged against the original's
                 AUDIO_XVECTOR: "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES",
                 # a class per audio frame (speaker diarization, voice activity: WavLMForAudioFrameClassification):
                 # logits [batch, frames, labels], judged per frame as a token classifier is per token
                 AUDIO_FRAMES: "MODEL_FOR_AUDIO_FRAME_CLASSIFICATION_MAPPING_NAMES",
                 # a CTC speech recognizer (Wav2Vec2ForCTC, HubertForCTC, ParakeetForCTC): logits over its
                 # characters or word pieces at every audio frame
                 "speech-recognition": "MODEL_FOR_CTC_MAPPING_NAMES",
                 "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
                 # an encoder-decoder that writes text for a text (T5, BART, Marian, Pegasus, mBART, ...: translation,
                 # summarization): the logits over its vocabulary at each position of the decoder's output, read
                 # with the reference output given (teacher forcing): `compression.seq2seq_lm`
                 "seq2seq-lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
                 # an encoder-decoder that writes text for audio (Whisper, Speech2Text, Moonshine: transcription
                 # and speech translation), read the same way from the audio's features or waveform:
                 # `compression.array_seq2seq`
                 "speech-seq2seq": "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
                 # an encoder-decoder that writes text for an image (a VisionEncoderDecoderModel: TrOCR, Donut,
                 # ViT-GPT2 captioning), read the same way from the image's pixel values; of the image-text-to-text
                 # mapping, the classes of IMAGE_ENCODER_DECODERS (the others take a text prompt too)
                 "image-to-text": IMAGE_TEXT_TO_TEXT,
                 # the base model of an image or audio encoder (Dinov2Model, ViTModel, ConvNextModel; Wav2Vec2Model,
                 # HubertModel): its features (`last_hidden_state`) for an .npz of images or waveforms, what
                 # transformers' image-feature-extraction pipeline gives (`array_feature_types` picks the types)
                 "image-feature-extraction": "MODEL_MAPPING_NAMES",
                 "audio-feature-extraction": "MODEL_MAPPING_NAMES"}
IMAGE_EMBEDDING = "image_embeds"  # the output of an image-text dual encoder's image-feature-extraction program
TOWER = "_vision_model"  # the model_type of a dual encoder's vision tower saved alone (clip_vision_model)
# Tasks whose model is a base model plus a trained head (a checkpoint without the head would start it random).
HEAD_TASKS = ("sequence-classification", "token-classification", "question-answering", MULTIPLE_CHOICE, "fill-mask",
              "image-classification", VIDEO_CLASSIFICATION, "semantic-segmentation", "depth-estimation",
              IMAGE_TO_IMAGE, POSE_ESTIMATION, IMAGE_MATTING, NORMAL_ESTIMATION, POINTMAP_ESTIMATION,
              "object-detection", ZERO_SHOT_DETECTION, "audio-classification",
              AUDIO_XVECTOR, AUDIO_FRAMES, "speech-recognition", *TIME_SERIES_TASKS)
# Tasks whose model reads images (`pixel_values`; a video classifier's clips of them) or audio (a waveform's
# `input_values`, or the spectrogram features of AST and Whisper) from an .npz, instead of text tokenized from a
# .jsonl.
IMAGE_TASKS = ("image-classification", VIDEO_CLASSIFICATION, "semantic-segmentation", "depth-estimation",
               IMAGE_TO_IMAGE, POSE_ESTIMATION, IMAGE_MATTING, NORMAL_ESTIMATION, POINTMAP_ESTIMATION,
               "object-detection", ZERO_SHOT_DETECTION, ZERO_SHOT_IMAGES,
               "image-to-text", "image-feature-extraction")
# The classes of an image-to-text model whose program reads the image and the decoder's input alone.
IMAGE_ENCODER_DECODERS = ("VisionEncoderDecoderModel",)
ZERO_SHOT_NEEDS_LABELS = ("a zero-shot-image-classification model chooses among the classes the job names: set "
                          "evaluation.candidate_labels to them (e.g. [\"cat\", \"dog\"]; each is read in "
                          "evaluation.hypothesis_template, 'This is a photo of {}.' unless set), and label "
                          "'<split>.y' by their indices")
DETECTOR_NEEDS_QUERIES = ("a zero-shot-object-detection model looks for the objects the job names: set "
                          "evaluation.candidate_labels to them (e.g. [\"cat\", \"remote control\"]; each is a text "
                          "query as given, or read in evaluation.hypothesis_template where that is set)")
LABELS_NEED_ZERO_SHOT = ("evaluation.candidate_labels name the classes of a zero-shot image classifier or the "
                         "queries of a zero-shot object detector (a zero-shot-image-classification folder: CLIP, "
                         "SigLIP, ...; a zero-shot-object-detection folder: OWL-ViT, OWLv2, Grounding DINO); this "
                         "model's classes are its own: remove them")
ZERO_SHOT_NEEDS_A_TOKENIZER = ("a {task} model reads each candidate label's text with its tokenizer, and the folder "
                               "has no tokenizer files; upload it with them (vocab.json and merges.txt, "
                               "tokenizer.json or its SentencePiece model, and tokenizer_config.json)")
# Tasks whose model reads the job's candidate labels (evaluation.candidate_labels) with its own text tower.
CANDIDATE_LABEL_TASKS = {ZERO_SHOT_IMAGES: ZERO_SHOT_NEEDS_LABELS, ZERO_SHOT_DETECTION: DETECTOR_NEEDS_QUERIES}
# The zero-shot detectors whose text queries are embedded apart from the image, and those that read the text inside
# the detector, token by token, run whole on it (`compression.zero_shot_detection`).
QUERY_DETECTORS = ("owlvit", "owlv2")
GROUNDED_DETECTORS = ("grounding-dino", "mm-grounding-dino")
# OmDet-Turbo reads its classes and a task prompt as two texts of its own layout.
UNSUPPORTED_DETECTOR = ("model_type '{model_type}' reads its classes and a task prompt in a text layout of its own; "
                        "the zero-shot-object-detection folders modelpress compresses are OWL-ViT's, OWLv2's and "
                        "Grounding DINO's: export this model with its queries fixed (torch.export) and upload the "
                        ".pt2")
AUDIO_TASKS = ("audio-classification", AUDIO_XVECTOR, AUDIO_FRAMES, "speech-recognition", "speech-seq2seq",
               "audio-feature-extraction")
# Tasks of an encoder-decoder that writes text: the program also reads the decoder's input (the output so far), and
# the labels are the output's tokens (`compression.seq2seq_lm`); a 'layers' student keeps some of the decoder's
# layers.
SEQ2SEQ_TASKS = ("seq2seq-lm", "speech-seq2seq", "image-to-text")
# Tasks whose 'layers' student keeps some of the decoder's layers (its count under the config's decoder field): an
# encoder-decoder that writes text, and a DETR-style detector, whose decoder turns its object queries into
# detections (RT-DETR's paper runs fewer of its decoder layers for speed).
DECODER_STUDENT_TASKS = (*SEQ2SEQ_TASKS, "object-detection")


def decoder_student(task: str | None, model_type: str | None) -> bool:
    """Whether a 'layers' student of this folder keeps some of its decoder's layers: an encoder-decoder that
    writes text, a DETR-style detector, and Grounding DINO (a DETR-style decoder over its object queries)."""
    return task in DECODER_STUDENT_TASKS or (task == ZERO_SHOT_DETECTION and model_type in GROUNDED_DETECTORS)
DECODER_INPUT = "decoder_input_ids"  # the program's input of the decoder's output so far
# ... or a window of a time series (`past_values`, `compression.archive.time_series`)
ARRAY_TASKS = IMAGE_TASKS + AUDIO_TASKS + TIME_SERIES_TASKS
# Tasks whose output is the base model's features, with no head and no classes.
FEATURE_TASKS = ("feature-extraction", "image-feature-extraction", "audio-feature-extraction")
# Tasks judged against reference texts (a split's '<split>.transcript' strings, which the folder's tokenizer reads:
# a recording's transcript, an image's text or caption) or the original model's own output, never class labels.
TRANSCRIBING_TASKS = ("speech-recognition", "speech-seq2seq", "image-to-text")
# Tasks judged against the original model's own outputs only: the class arrays of an .npz are refused for them.
UNLABELLED_ARRAY_TASKS = (*TRANSCRIBING_TASKS, *FEATURE_TASKS, AUDIO_XVECTOR, "depth-estimation", IMAGE_TO_IMAGE,
                          POSE_ESTIMATION, IMAGE_MATTING, NORMAL_ESTIMATION, POINTMAP_ESTIMATION,
                          "object-detection", ZERO_SHOT_DETECTION, TS_FORECASTING)
# The array feature task of a base model that reads images or audio, by what `non_text_input` says it reads.
ARRAY_FEATURE_TASK = {"images (pixel_values)": "image-feature-extraction",
                      "audio (input_values or input_features)": "audio-feature-extraction"}
SPEECH_LABELS = ("a speech-recognition job is measured against the original model's transcripts, and class labels "
                 "mean nothing for it; remove {labels} from the .npz (reference transcripts go in "
                 "'<split>.transcript', one string per example)")
SPEECH_SEQ2SEQ_LABELS = ("a speech-seq2seq model writes text: its job is measured against each split's transcripts "
                         "(reference texts in '<split>.transcript', one string per example), or against what the "
                         "original model writes where a split has none, and class labels mean nothing for it; remove "
                         "{labels} from the .npz")
IMAGE_TO_TEXT_LABELS = ("an image-to-text model writes text: its job is measured against each split's reference texts "
                        "(an image's text or caption in '<split>.transcript', one string per example), or against "
                        "what the original model writes where a split has none, and class labels mean nothing for "
                        "it; remove {labels} from the .npz")
FEATURES_HAVE_NO_LABELS = ("an {task} job compares the compressed model's features with the original's, and class "
                           "labels mean nothing for features; remove {labels} from the .npz, or upload a checkpoint "
                           "saved with its classification head (task {head})")


DEPTH_LABELS = ("a depth-estimation job compares each of the compressed model's depth maps with the original's "
                "(cosine of the whole map, SQNR); ground-truth depths are not read: remove {labels} from the .npz")
IMAGE_TO_IMAGE_LABELS = ("an image-to-image job compares each image the compressed model makes with the original's "
                         "(cosine of the whole image, SQNR); class labels mean nothing for it, and reference images "
                         "are not read: remove {labels} from the .npz")
POSE_LABELS = ("a pose-estimation job compares where each keypoint's heatmap peaks in the compressed model's output "
               "with the original's (metric top1_agreement over the heatmap's positions); ground-truth keypoints "
               "are not read: remove {labels} from the .npz")
NORMAL_LABELS = ("a normal-estimation job compares each pixel's unit normal the compressed model gives with the "
                 "original's (cosine: the mean cosine of their angle); ground-truth normals are not read: remove "
                 "{labels} from the .npz")
POINTMAP_LABELS = ("a pointmap-estimation job compares each point map the compressed model gives with the "
                   "original's (cosine of the whole map, SQNR); ground-truth points are not read: remove {labels} "
                   "from the .npz")
MATTING_LABELS = ("an image-matting job compares each alpha matte the compressed model makes with the original's "
                  "(soft Dice and mean absolute error over the pixels); ground-truth mattes are not read: remove "
                  "{labels} from the .npz")
DETECTION_LABELS = ("{a_task} job compares the compressed model's detections with the original's (metric "
                    "'detection_map', their mean average precision with the original's as the objects); class "
                    "labels cannot say where objects are, and ground-truth boxes are not read: remove {labels} "
                    "from the .npz")


def unlabelled_task_problem(task: str, labels: list[str]) -> str:
    """Why an .npz's class `labels` (array names) cannot go with `task`, a task judged against the original model's
    outputs alone."""
    if task == "depth-estimation":
        return DEPTH_LABELS.format(labels=labels)
    if task == IMAGE_TO_IMAGE:
        return IMAGE_TO_IMAGE_LABELS.format(labels=labels)
    if task == POSE_ESTIMATION:
        return POSE_LABELS.format(labels=labels)
    if task == IMAGE_MATTING:
        return MATTING_LABELS.format(labels=labels)
    if task == NORMAL_ESTIMATION:
        return NORMAL_LABELS.format(labels=labels)
    if task == POINTMAP_ESTIMATION:
        return POINTMAP_LABELS.format(labels=labels)
    if task in ("object-detection", ZERO_SHOT_DETECTION):
        return DETECTION_LABELS.format(a_task="an object-detection" if task == "object-detection" else f"a {task}",
                                       labels=labels)
    if task == TS_FORECASTING:
        return FORECAST_LABELS.format(labels=labels)
    if task == "speech-recognition":
        return SPEECH_LABELS.format(labels=labels)
    if task == "speech-seq2seq":
        return SPEECH_SEQ2SEQ_LABELS.format(labels=labels)
    if task == "image-to-text":
        return IMAGE_TO_TEXT_LABELS.format(labels=labels)
    head = "image-classification" if task in IMAGE_TASKS else "audio-classification"
    return FEATURES_HAVE_NO_LABELS.format(task=task, labels=labels, head=head)


def one_shape_problem(shapes: dict[str, list]) -> str | None:
    """Why the splits' input shapes (split -> each input's shape after the batch) cannot feed one image or audio
    folder's program, which is exported at the shape of the dataset's rows with its batch alone dynamic; None when
    they are one."""
    if len({str(shape) for shape in shapes.values()}) < 2:
        return None
    listed = ", ".join(f"{split} {shape[0] if len(shape) == 1 else shape}" for split, shape in shapes.items())
    return (f"the job's splits hold inputs of different shapes ({listed}, after the batch): a Hugging Face folder's "
            "model is exported at one input shape, its batch alone varying; pad or crop every split to one length "
            "(or size)")


TOO_MANY_TO_TRANSCRIBE = ("split '{split}' has {rows:,} examples and no transcripts: the upload would write the text "
                          "of each before the job starts (greedy generation, one decoder pass per token), and the "
                          f"service does it for at most {MAX_WRITTEN_ROWS:,} examples a split; give the split its "
                          "reference transcripts ('<split>.transcript', one string per example), or keep "
                          f"{MAX_WRITTEN_ROWS:,} examples")
TRANSCRIPTS_NEED_A_TOKENIZER = ("the dataset has reference transcripts ({arrays}), but the model folder has no "
                                "tokenizer files to turn its tokens into text; upload the folder with them (vocab.json "
                                "and tokenizer_config.json, or tokenizer.json)")
TASKS = tuple(TASK_MAPPINGS)
# transformers' pipeline names (a model card's `pipeline_tag`) for the tasks above, taken as them; speech recognition
# is the CTC task or the encoder-decoder one by what the checkpoint is (`canonical_task`).
TASK_ALIASES = {"text-classification": "sequence-classification", "zero-shot-classification": "sequence-classification",
                "ner": "token-classification", "text-generation": "causal-lm", "text2text-generation": "seq2seq-lm",
                "translation": "seq2seq-lm", "summarization": "seq2seq-lm", "sentence-similarity": "feature-extraction",
                "automatic-speech-recognition": "speech-recognition", "image-segmentation": "semantic-segmentation"}
# Mappings of models that read text (token ids; multimodal ones too, whose text-only forward the worker's export
# tries), and of models that read something else, by what they read: a model_type found only among the latter
# cannot take a .jsonl dataset (ViT's pixel_values, Wav2Vec2's waveform).
TEXT_MAPPINGS = tuple(f"MODEL_FOR_{kind}_MAPPING_NAMES" for kind in (
    "MASKED_LM", "SEQUENCE_CLASSIFICATION", "CAUSAL_LM", "TOKEN_CLASSIFICATION", "QUESTION_ANSWERING",
    "SEQ_TO_SEQ_CAUSAL_LM", "TEXT_ENCODING", "MULTIPLE_CHOICE", "IMAGE_TEXT_TO_TEXT", "MULTIMODAL_LM",
    "VISUAL_QUESTION_ANSWERING", "DOCUMENT_QUESTION_ANSWERING", "TABLE_QUESTION_ANSWERING", "TEXT_TO_SPECTROGRAM",
    "TEXT_TO_WAVEFORM"))
OTHER_INPUTS = {"images (pixel_values)": ("IMAGE", "VISION", "DEPTH", "OBJECT_DETECTION", "SEGMENTATION",
                                          "KEYPOINT", "MASK_GENERATION"),
                "audio (input_values or input_features)": ("AUDIO", "CTC", "SPEECH", "RNNT", "TDT"),
                "video (pixel_values)": ("VIDEO",),
                "time series (past_values)": ("TIME_SERIES",)}


@lru_cache
def model_types_by_task() -> dict[str, dict[str, str]]:
    """task -> {model_type: class name}."""
    mappings = _mappings()
    missing = [task for task, name in TASK_MAPPINGS.items() if name not in mappings]
    if missing:
        raise RuntimeError(f"transformers' modeling_auto.py no longer defines the mappings for {sorted(missing)}")
    tables = {task: mappings[name] for task, name in TASK_MAPPINGS.items()}
    for task in ARRAY_FEATURE_TASK.values():
        tables[task] = array_feature_types(task)
    # a zero-shot video classifier (VideoPrism) reads clips, not images
    tables[ZERO_SHOT_IMAGES] = {model_type: name for model_type, name in tables[ZERO_SHOT_IMAGES].items()
                                if model_type not in _video_types(mappings)}
    # An image-text model transformers builds only as image-text-to-text (Mistral 3, Qwen2.5-VL, LLaVA) is a
    # causal LM for text (`compression.causal_lm_class`).
    image_text = mappings.get(IMAGE_TEXT_TO_TEXT, {})
    tables["causal-lm"] = tables["causal-lm"] | {model_type: name for model_type, name in image_text.items()
                                                 if model_type not in tables["causal-lm"]
                                                 and name not in IMAGE_ENCODER_DECODERS}
    tables["image-to-text"] = {model_type: name for model_type, name in image_text.items()
                               if name in IMAGE_ENCODER_DECODERS}
    # A mask classifier (Mask2Former, MaskFormer, EoMT) segments as its semantic class map
    # (`compression.segmenter_class`), whichever of semantic, instance or panoptic data it was trained on.
    universal = mappings.get("MODEL_FOR_UNIVERSAL_SEGMENTATION_MAPPING_NAMES", {})
    tables["semantic-segmentation"] = tables["semantic-segmentation"] | {
        model_type: name for model_type, name in universal.items() if model_type in MASK_SEGMENTERS}
    # PatchTST's and PatchTSMixer's forecasting heads, which transformers' prediction mapping (TimesFM) leaves out
    tables[TS_FORECASTING] = tables[TS_FORECASTING] | FORECASTERS
    return tables


@lru_cache
def _mappings() -> dict[str, dict[str, str]]:
    """Every `*_MAPPING_NAMES` literal of modeling_auto.py: name -> {model_type: class name}."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise RuntimeError("transformers is not installed; Hugging Face folders cannot be checked")
    source = (Path(spec.origin).parent / "models" / "auto" / "modeling_auto.py").read_text()
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        name = getattr(node.targets[0], "id", "") if isinstance(node, ast.Assign) and len(node.targets) == 1 else ""
        if name.endswith("_MAPPING_NAMES") and isinstance(node.value, ast.Call) and node.value.args:
            try:
                pairs = ast.literal_eval(node.value.args[0])
            except ValueError:
                continue  # not a literal: no mapping the checks read
            found[name] = {key: value if isinstance(value, str) else value[0] for key, value in pairs}
    return found


def pretraining_classes() -> dict[str, str]:
    """{model_type: class} of transformers' pretraining heads (BertForPreTraining: masked LM and next sentence)."""
    return _mappings().get("MODEL_FOR_PRETRAINING_MAPPING_NAMES", {})


def array_feature_types(task: str) -> dict[str, str]:
    """The base models an image or audio feature task runs: {model_type: class name} of MODEL_MAPPING_NAMES whose
    type reads images (or audio), not text. Images: where that class is also the one transformers lists for
    images alone (MODEL_FOR_IMAGE_MAPPING_NAMES), or for zero-shot image classification (an image-text dual
    encoder such as CLIP or SigLIP, whose image embedding `get_image_features` computes: `image_text_encoder`;
    or its vision tower saved alone, CLIPVisionModel: `dual_encoder_tower`),
    for a model of single images (a video model's pixel_values are clips; SAM wants its prompts too). Audio: the
    encoders transformers also builds with a classification, CTC or x-vector head (a sequence-to-sequence
    recognizer's base model needs the decoder's inputs too)."""
    mappings = _mappings()
    base = mappings["MODEL_MAPPING_NAMES"]
    reads = next(what for what, name in ARRAY_FEATURE_TASK.items() if name == task)
    if task == "image-feature-extraction":
        video = _video_types(mappings)
        kept = {model_type for name in ("MODEL_FOR_IMAGE_MAPPING_NAMES", IMAGE_TEXT_ENCODERS)
                for model_type, class_name in mappings.get(name, {}).items() if base.get(model_type) == class_name}
        kept |= {model_type for model_type in base if dual_encoder_tower(model_type)}  # CLIPVisionModel
        kept -= video
    else:
        heads = [mappings.get(name, {}) for name in ("MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
                                                     "MODEL_FOR_CTC_MAPPING_NAMES",
                                                     "MODEL_FOR_AUDIO_XVECTOR_MAPPING_NAMES")]
        # (Parakeet's, LASR's and Granite Speech's CTC types have no base model: AutoModel builds the CTC head.)
        kept = {model_type for table in heads for model_type in table
                if not any(head.get(model_type) == base.get(model_type) for head in heads)}
    return {model_type: name for model_type, name in base.items()
            if model_type in kept and non_text_input(model_type) == reads}


def _video_types(mappings: dict[str, dict[str, str]]) -> set[str]:
    """The model_types of video models: any a video mapping lists, and a video model's vision tower (VideoPrism's),
    which makes the model and its tower video models."""
    video = {model_type for name, table in mappings.items() if "VIDEO" in name for model_type in table}
    video |= {model_type.removesuffix(TOWER) for model_type in video if model_type.endswith(TOWER)}
    return video | {f"{model_type}{TOWER}" for model_type in video}


def dual_encoder_tower(model_type: str) -> bool:
    """Whether the model_type is the vision tower of an image-text dual encoder saved on its own
    (`clip_vision_model`: CLIPVisionModel), which no mapping but the base one lists."""
    return (model_type.endswith(TOWER) and image_text_encoder(model_type.removesuffix(TOWER))
            and model_type in _mappings()["MODEL_MAPPING_NAMES"])


def image_text_encoder(model_type: str) -> bool:
    """Whether the model_type is an image-text dual encoder (CLIP, SigLIP, ALIGN, ...): its image features are the
    embedding `get_image_features` gives, in the space its text embeddings share."""
    return model_type in _mappings().get(IMAGE_TEXT_ENCODERS, {})


def non_text_input(model_type: str) -> str | None:
    """What a model_type reads when that is not text: "images (pixel_values)", ...; None for a text model (one of
    TEXT_MAPPINGS) or a type no mapping places."""
    mappings = _mappings()
    if any(model_type in mappings.get(name, {}) for name in TEXT_MAPPINGS):
        return None
    if dual_encoder_tower(model_type):
        return "images (pixel_values)"
    for reads, markers in OTHER_INPUTS.items():
        if any(marker in name and model_type in table for name, table in mappings.items() for marker in markers):
            return reads
    return None


def canonical_task(task: str | None, model_type: str, architectures: list[str]) -> str | None:
    """The task a pipeline name (`TASK_ALIASES`) stands for with this checkpoint; any other task as given.
    "automatic-speech-recognition" is speech-seq2seq for an encoder-decoder (Whisper, Speech2Text), saved as one or
    with no CTC head in transformers, else speech-recognition (a CTC head: wav2vec2, HuBERT)."""
    if task not in TASK_ALIASES:
        return task
    if task == "automatic-speech-recognition":
        tables = model_types_by_task()
        saved = {task_of_architecture(name) for name in architectures}
        if model_type in tables["speech-seq2seq"] and ("speech-seq2seq" in saved
                                                        or model_type not in tables["speech-recognition"]):
            return "speech-seq2seq"
    return TASK_ALIASES[task]


def task_of_architecture(architecture: str) -> str | None:
    """The task a checkpoint's `architectures` entry was saved for, by the class-name conventions of
    transformers (`LlamaForCausalLM`, `GPT2LMHeadModel`, `BertForSequenceClassification`,
    `BertForTokenClassification`, `BertForQuestionAnswering`, `ViTForImageClassification`,
    `Wav2Vec2ForSequenceClassification`, `Wav2Vec2ForCTC`, `T5ForConditionalGeneration`, `BertModel`)."""
    tables = model_types_by_task()
    for task in ("causal-lm", *SEQ2SEQ_TASKS, *HEAD_TASKS, "feature-extraction"):
        if architecture in tables[task].values():
            return task
    return None
