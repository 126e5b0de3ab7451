"""Tiny Hugging Face folders built in the test (no download): random transformers models with a word-level
tokenizer trained on a few lines, zipped or tarred the way users upload them."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

CORPUS = [f"the {animal} {verb} the {thing} near the {place}" for animal in ("cat", "dog", "bird", "fox")
          for verb in ("sees", "finds", "likes") for thing in ("ball", "stick", "box") for place in ("house", "tree")]


def save_tokenizer(folder: Path, mask: bool = False, punctuation: bool = False) -> int:
    """A word-level tokenizer of CORPUS saved as transformers writes one (with `mask`, a masked LM's: [CLS] and
    [SEP] around each text, and a [MASK] token; with `punctuation`, full stops split from words, as BERT's are);
    returns its vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "[PAD]", "[EOS]", *(("[CLS]", "[SEP]", "[MASK]") if mask else ())]
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer() if punctuation else pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator([*CORPUS, "."] if punctuation else CORPUS,
                                  trainers.WordLevelTrainer(special_tokens=specials))
    roles = {}
    if mask:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[(token, tokenizer.token_to_id(token)) for token in ("[CLS]", "[SEP]")])
        roles = {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[EOS]", **roles)
    fast.save_pretrained(folder)
    return tokenizer.get_vocab_size()


def llama_folder(folder: Path, layers: int = 2, seed: int = 0, tie: bool = False, kv_heads: int = 2) -> Path:
    """A Llama causal LM with 4 query heads over `kv_heads` key/value heads; `tie`: its output layer shares the
    input embedding's table (Llama 3.2, Qwen2.5, GPT-2)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = save_tokenizer(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=256,
                         eos_token_id=2, pad_token_id=1, bos_token_id=None, tie_word_embeddings=tie)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def gpt2_folder(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = save_tokenizer(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=2,
                        eos_token_id=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def gpt1_folder(folder: Path) -> Path:
    """A GPT-1 causal LM (`openai-gpt`: GPT-2's Conv1D layers in post-norm blocks)."""
    import torch
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    vocab = save_tokenizer(folder)
    torch.manual_seed(0)
    OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2,
                                         n_positions=64)).save_pretrained(folder)
    return folder


def seq2seq_folder(folder: Path, model_type: str = "t5", decoder_layers: int = 2) -> Path:
    """A tiny encoder-decoder that writes text (task seq2seq-lm): T5 (relative positions, its own start token, the
    pad token) or BART (learned positions, tied token tables), with 2 encoder layers."""
    import torch
    import transformers

    vocab = save_tokenizer(folder)  # [PAD] 1, [EOS] 2
    torch.manual_seed(0)
    if model_type == "t5":
        config = transformers.T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                       num_decoder_layers=decoder_layers, decoder_start_token_id=1, pad_token_id=1,
                                       eos_token_id=2)
        transformers.T5ForConditionalGeneration(config).save_pretrained(folder)
    else:
        config = transformers.BartConfig(vocab_size=vocab, d_model=32, encoder_layers=2, decoder_layers=decoder_layers,
                                         encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                         decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=1,
                                         eos_token_id=2, bos_token_id=0, decoder_start_token_id=2,
                                         forced_bos_token_id=None)
        transformers.BartForConditionalGeneration(config).save_pretrained(folder)
    return folder


WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
WHISPER_FRAMES, WHISPER_BINS = 100, 16  # a tiny Whisper's fixed input: 16 mel bins x 2 x 50 source positions


def save_whisper_tokenizer(folder: Path) -> dict[str, int]:
    """A Whisper tokenizer (byte-level BPE of CORPUS, Whisper's special tokens after it, English transcription as
    its prefix) saved as transformers writes one; returns the special tokens' ids."""
    import tempfile

    from tokenizers import ByteLevelBPETokenizer
    from transformers import WhisperTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, show_progress=False)
    with tempfile.TemporaryDirectory() as saved:
        bpe.save_model(saved)
        vocab = json.loads((Path(saved) / "vocab.json").read_text())
        merges = [tuple(line.split()) for line in (Path(saved) / "merges.txt").read_text().splitlines()[1:] if line]
    specials = {token: len(vocab) + index for index, token in enumerate(WHISPER_SPECIALS)}
    tokenizer = WhisperTokenizer(vocab=vocab | specials, merges=merges, language="en", task="transcribe")
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    tokenizer.save_pretrained(folder)
    return specials


def whisper_folder(folder: Path, decoder_layers: int = 2, weight_scale: float = 0.3) -> Path:
    """A tiny multilingual Whisper (task speech-seq2seq) with its tokenizer and a generation config laid out as
    openai/whisper-tiny's (language detection among <|en|> and <|fr|>, transcription, no timestamps), its weights
    drawn at `weight_scale` so that it writes varied tokens rather than one token again and again."""
    import torch
    import transformers

    specials = save_whisper_tokenizer(folder)
    end, start = specials["<|endoftext|>"], specials["<|startoftranscript|>"]
    config = transformers.WhisperConfig(
        vocab_size=end + len(WHISPER_SPECIALS), d_model=32, encoder_layers=1, decoder_layers=decoder_layers,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        num_mel_bins=WHISPER_BINS, max_source_positions=WHISPER_FRAMES // 2, max_target_positions=96,
        pad_token_id=end, eos_token_id=end, bos_token_id=end, decoder_start_token_id=start,
        begin_suppress_tokens=[end], suppress_tokens=[])
    torch.manual_seed(0)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, weight_scale)
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=start, eos_token_id=end, pad_token_id=end, bos_token_id=end, max_length=96,
        is_multilingual=True, lang_to_id={"<|en|>": specials["<|en|>"], "<|fr|>": specials["<|fr|>"]},
        task_to_id={"translate": specials["<|translate|>"], "transcribe": specials["<|transcribe|>"]},
        no_timestamps_token_id=specials["<|notimestamps|>"], begin_suppress_tokens=[end], suppress_tokens=[])
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(WHISPER_EXTRACTOR))
    return folder


# What WhisperFeatureExtractor writes (openai/whisper-tiny's, at the tiny model's mel bins and 1 s of frames).
WHISPER_EXTRACTOR = {"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": WHISPER_BINS,
                     "sampling_rate": 16000, "hop_length": 160, "chunk_length": 1, "n_fft": 400,
                     "n_samples": 16000, "nb_max_frames": WHISPER_FRAMES, "padding_side": "right",
                     "padding_value": 0.0, "return_attention_mask": False}


def bert_folder(folder: Path, classes: int | None = None, layers: int = 2, dtype: str = "float32",
                per_token: bool = False, answers: bool = False, masked_lm: bool = False, multiple_choice: bool = False,
                **config_fields) -> Path:
    """A BERT encoder (`BertModel`), or a sequence classifier with `classes` labels (with `per_token`, a token
    classifier: an NER tagger), or with `answers` an extractive question-answering model, with `multiple_choice`
    a multiple-choice model (`BertForMultipleChoice`: a logit per choice), or with `masked_lm` a
    pretrained encoder's checkpoint (`BertForMaskedLM`, with a [MASK] token); its weights saved as `dtype` (most
    checkpoints on the Hub are bfloat16 or float16). `config_fields`: more of the config (`id2label`,
    `problem_type`, ...)."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForMultipleChoice,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    vocab = save_tokenizer(folder, mask=masked_lm)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=classes or 2, **config_fields)
    head = BertForTokenClassification if per_token else BertForSequenceClassification
    model = (BertForQuestionAnswering(config) if answers else BertForMaskedLM(config) if masked_lm else
             BertForMultipleChoice(config) if multiple_choice else head(config) if classes else BertModel(config))
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    return folder


# What ViTImageProcessor writes for google/vit-base-patch16-224 (less its resize settings, which are not read).
VIT_PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def image_folder(folder: Path, architecture: str = "vit", classes: int = 4, processor: dict | None = VIT_PROCESSOR,
                 feature_extraction: bool = False, dtype: str = "float32", **vit_fields) -> Path:
    """A 32x32 image classifier (`ViTForImageClassification`, `Dinov2ForImageClassification`, or
    `ResNetForImageClassification`, which takes any size) with `classes` labels and the image processor's
    `processor` settings, its weights saved as `dtype`; with `feature_extraction`, the base model (`ViTModel`)
    instead. `vit_fields`: more of a ViT's config (`problem_type`, ...)."""
    import torch
    from transformers import (
        Dinov2Config,
        Dinov2ForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTModel,
    )

    torch.manual_seed(0)
    if architecture == "dinov2":  # a backbone config: it names a stage per layer
        model = Dinov2ForImageClassification(Dinov2Config(image_size=32, patch_size=8, hidden_size=32,
                                                          num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                                                          num_labels=classes))
    elif architecture == "vit":
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, num_labels=classes, **vit_fields)
        model = ViTModel(config) if feature_extraction else ViTForImageClassification(config)
    else:
        model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                          num_labels=classes))
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


# What VideoMAEImageProcessor writes for MCG-NJU/videomae-base-finetuned-kinetics, at a tiny model's size: each
# frame resized by its shortest edge, center-cropped, rescaled and normalized with ImageNet's statistics.
VIDEOMAE_PROCESSOR = {"image_processor_type": "VideoMAEImageProcessor", "do_resize": True,
                      "size": {"shortest_edge": 32}, "resample": 2, "do_center_crop": True,
                      "crop_size": {"height": 32, "width": 32}, "do_rescale": True, "rescale_factor": 1 / 255,
                      "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def video_folder(folder: Path, classes: int = 3, frames: int = 4) -> Path:
    """A video classifier (`VideoMAEForVideoClassification`) of 32x32 clips of `frames` frames (tubelets of two
    frames and 16x16 patches) with `classes` labels and VideoMAE's processor settings."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    config = VideoMAEConfig(image_size=32, patch_size=16, num_frames=frames, tubelet_size=2, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=classes)
    VideoMAEForVideoClassification(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VIDEOMAE_PROCESSOR))
    return folder


# What Swin2SRImageProcessor writes for caidas/swin2SR-classical-sr-x2-64: rescale, then pad to the window.
SWIN2SR_PROCESSOR = {"image_processor_type": "Swin2SRImageProcessor", "do_rescale": True, "rescale_factor": 1 / 255,
                     "do_pad": True, "pad_size": 8}


def super_resolution_folder(folder: Path) -> Path:
    """A 2x super-resolution model (`Swin2SRForImageSuperResolution`: one stage of one block, 4x4 windows) with
    Swin2SR's processor settings."""
    import torch
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution

    torch.manual_seed(0)
    config = Swin2SRConfig(image_size=16, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, upscale=2)
    Swin2SRForImageSuperResolution(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(SWIN2SR_PROCESSOR))
    return folder


SEGFORMER_PROCESSOR = {"image_processor_type": "SegformerImageProcessor", "do_resize": True,
                       "size": {"height": 64, "width": 64}, "do_rescale": True, "rescale_factor": 1 / 255,
                       "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def segformer_folder(folder: Path, classes: int = 5) -> Path:
    """A tiny SegFormer (`SegformerForSemanticSegmentation`, two stages, 64x64 images in, class logits at 16x16
    out) with its image processor's settings."""
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32, num_labels=classes,
                             id2label={index: f"class{index}" for index in range(classes)},
                             label2id={f"class{index}": index for index in range(classes)})
    SegformerForSemanticSegmentation(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(SEGFORMER_PROCESSOR))
    return folder


# What VitPoseImageProcessor writes for usyd-community/vitpose-base-simple, at a tiny model's crop size (its affine
# transform crops each person's box to that size; the service takes the crops).
VITPOSE_PROCESSOR = {"image_processor_type": "VitPoseImageProcessor", "do_affine_transform": True,
                     "size": {"height": 64, "width": 48}, "do_rescale": True, "rescale_factor": 1 / 255,
                     "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def vitpose_folder(folder: Path, keypoints: int = 5) -> Path:
    """A tiny top-down pose estimator (`VitPoseForPoseEstimation`: a two-layer ViT over 64x48 crops, its simple
    decoder's heatmaps at 16x12) with ViTPose's processor settings."""
    import torch
    from transformers import VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(0)
    backbone = {"model_type": "vitpose_backbone", "image_size": [64, 48], "patch_size": [16, 16], "hidden_size": 32,
                "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2}
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=keypoints)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VITPOSE_PROCESSOR))
    return folder


SERIES_CLASSES = {"time-series-classification": {"patchtst": "PatchTSTForClassification",
                                                  "patchtsmixer": "PatchTSMixerForTimeSeriesClassification"},
                  "time-series-regression": {"patchtst": "PatchTSTForRegression",
                                              "patchtsmixer": "PatchTSMixerForRegression"},
                  "time-series-forecasting": {"patchtst": "PatchTSTForPrediction",
                                               "patchtsmixer": "PatchTSMixerForPrediction"}}


def series_folder(folder: Path, task: str, model_type: str = "patchtst", context: int = 32, channels: int = 3,
                  targets: int = 3, horizon: int = 8) -> Path:
    """A tiny time-series head (PatchTST or PatchTSMixer, two layers over 8-step patches) saved for `task`, as
    ibm-granite's PatchTST and TTM checkpoints are saved."""
    import torch
    import transformers

    torch.manual_seed(0)
    shared = {"context_length": context, "num_input_channels": channels, "patch_length": 8, "patch_stride": 8,
              "d_model": 16, "num_targets": targets, "prediction_length": horizon}
    config = (transformers.PatchTSTConfig(**shared, num_attention_heads=2, num_hidden_layers=2, ffn_dim=32)
              if model_type == "patchtst" else transformers.PatchTSMixerConfig(**shared, num_layers=2))
    getattr(transformers, SERIES_CLASSES[task][model_type])(config).eval().save_pretrained(folder)
    return folder


def series_windows(path: Path, rows: int = 16, context: int = 32, channels: int = 3, labels=None) -> Path:
    """An .npz of sine windows with noise, [rows, context, channels] per split (train, val), and `labels` (a
    function of the split's row count) as '<split>.y' where given."""
    import numpy as np

    rng = np.random.default_rng(0)
    steps = np.arange(context)[None, :, None]
    arrays = {}
    for split in ("train", "val"):
        phase, scale = rng.uniform(0, 6, (rows, 1, channels)), rng.uniform(0.5, 3, (rows, 1, channels))
        arrays[f"{split}.x"] = (scale * np.sin(steps / 3 + phase) + 0.1 * rng.standard_normal(
            (rows, context, channels))).astype(np.float32)
        if labels is not None:
            arrays[f"{split}.y"] = labels(rows)
    np.savez(path, **arrays)
    return path


# What hustvl/vitmatte-small-composition-1k's preprocessor_config.json says (VitMatteImageProcessor).
VITMATTE_PROCESSOR = {"image_processor_type": "VitMatteImageProcessor", "do_rescale": True, "rescale_factor": 1 / 255,
                      "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                      "do_pad": True, "size_divisibility": 32}


def vitmatte_folder(folder: Path) -> Path:
    """A tiny image matting model (`VitMatteForImageMatting`: a two-layer ViTDet over 16x16 patches of the image and
    its trimap, a small detail-capture decoder) with ViTMatte's processor settings."""
    import torch
    from transformers import VitMatteConfig, VitMatteForImageMatting

    torch.manual_seed(0)
    backbone = {"model_type": "vitdet", "num_channels": 4, "image_size": 64, "patch_size": 16, "hidden_size": 32,
                "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2, "out_features": ["stage2"],
                "use_relative_position_embeddings": True}
    VitMatteForImageMatting(VitMatteConfig(backbone_config=backbone, hidden_size=32,
                                           convstream_hidden_sizes=[8, 16, 32],
                                           fusion_hidden_sizes=[32, 16, 8, 8])).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VITMATTE_PROCESSOR))
    return folder


def sapiens2_folder(folder: Path, task: str = "normal-estimation") -> Path:
    """A tiny Sapiens 2 (a two-layer ViT over 16x16 patches of 64x48 person crops, a small upsampling head) saved
    for `task` (normal-estimation, pointmap-estimation, pose-estimation or image-matting), with ViTPose's processor
    settings."""
    import torch
    from transformers import AutoConfig

    from compression.hf_program import auto_class

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "sapiens2", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_attention_heads=2, num_key_value_heads_per_layer=[2, 2], num_first_full_attention_layers=1,
        num_last_full_attention_layers=1, image_size=[64, 48], patch_size=16, num_register_tokens=2,
        out_features=["stage2"], out_indices=[2], stage_names=["stem", "stage1", "stage2"],
        # (a pointmap head's scale branch: a convolution and an MLP to one scale per image)
        head_config={"upsample_out_channels": [16, 16], "conv_out_channels": [16],
                     **({"scale_conv_out_channels": [8], "scale_final_hidden_sizes": [8, 8]}
                        if task == "pointmap-estimation" else {})},
        num_labels={"normal-estimation": 3, "pointmap-estimation": 3, "pose-estimation": 5, "image-matting": 4}[task])
    auto_class(task).from_config(config).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VITPOSE_PROCESSOR))
    return folder


def mask2former_folder(folder: Path, classes: int = 5) -> Path:
    """A tiny Mask2Former (`Mask2FormerForUniversalSegmentation` over a four-stage Swin, ten object queries, 64x64
    images in, masks at 16x16 out) with SegFormer's processor settings (rescale, ImageNet normalization)."""
    import torch
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    backbone = {"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                "image_size": 64, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
    config = Mask2FormerConfig(backbone_config=backbone, hidden_dim=32, mask_feature_size=32, feature_size=32,
                               encoder_layers=1, decoder_layers=2, num_queries=10, encoder_feedforward_dim=64,
                               dim_feedforward=64, num_attention_heads=2, num_labels=classes)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(SEGFORMER_PROCESSOR))
    return folder


DEPTH_PROCESSOR = {"image_processor_type": "DPTImageProcessor", "do_resize": True,
                   "size": {"height": 56, "width": 56}, "do_rescale": True, "rescale_factor": 1 / 255,
                   "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def depth_anything_folder(folder: Path) -> Path:
    """A tiny Depth Anything (a four-layer DINOv2 backbone, 56x56 images, a depth per pixel)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                            mlp_ratio=2, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                 neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16, head_hidden_size=8)
    model = DepthAnythingForDepthEstimation(config)
    with torch.no_grad():  # depths that vary by about 1 (a random head's are ~1e-7: nothing a quantizer keeps)
        model.head.conv3.weight.mul_(1e6)
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DEPTH_PROCESSOR))
    return folder


def loaded_image_folder(stage):
    """The stage's Hugging Face folder loaded with `from_pretrained`, after checking that it ships the processor
    settings its users scale their images with."""
    from compression.formats import hf_folder

    [artifact] = [artifact for artifact in stage.artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    with zipfile.ZipFile(artifact.path) as archive:
        assert "preprocessor_config.json" in archive.namelist()
    return hf_folder.load(artifact.path)


def last_folder_of_accuracy_job(result, rows: int):
    """The last stage's folder loaded with `from_pretrained`, once every stage of `result` was judged by accuracy
    over `rows` labelled examples (a whole number of them right) and written back as a folder."""
    from compression.formats import hf_folder

    assert result.baseline["metric"] == "accuracy"
    for stage in result.stages:
        assert round(stage.metrics["accuracy"] * rows, 6) % 1 == 0 and stage.metrics["hf_folder"]["written"]
    [artifact] = [artifact for artifact in result.stages[-1].artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    return hf_folder.load(artifact.path)


def scaled_val_images(images: Path):
    """The `val.x` uint8 images of an .npz as the pixel values VIT_PROCESSOR makes of them."""
    import numpy as np
    import torch

    from compression.archive.pixel_scaling import PixelScaling

    with np.load(images) as arrays:
        return torch.from_numpy(PixelScaling.from_processor(VIT_PROCESSOR).apply(arrays["val.x"], 3))


# What Wav2Vec2FeatureExtractor writes for facebook/wav2vec2-base: it normalizes each waveform.
WAV2VEC2_EXTRACTOR = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True,
                      "sampling_rate": 16000, "feature_size": 1, "padding_value": 0.0, "return_attention_mask": False}
_AUDIO_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
AUDIO_CONFIGS = {  # tiny configs: a waveform model, and two that read spectrogram features
    "wav2vec2": {"conv_dim": (16, 16), "conv_stride": (5, 2), "conv_kernel": (10, 3), "num_conv_pos_embeddings": 16,
                 "num_conv_pos_embedding_groups": 2, **_AUDIO_SMALL},
    "audio-spectrogram-transformer": {"max_length": 64, "num_mel_bins": 32, "patch_size": 16, **_AUDIO_SMALL},
    "whisper": {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_mel_bins": 16,
                "max_source_positions": 50},
}


def audio_folder(folder: Path, model_type: str = "wav2vec2", classes: int = 3,
                 extractor: dict | None = WAV2VEC2_EXTRACTOR, head: str = "classification") -> Path:
    """A tiny audio classifier of `model_type` (AUDIO_CONFIGS) with `classes` labels, and its feature extractor's
    `extractor` settings; `head` "xvector": a speaker-verification head (`Wav2Vec2ForXVector`, 16-wide x-vectors)
    instead, "frames": a class per audio frame (`Wav2Vec2ForAudioFrameClassification`)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForAudioClassification,
        AutoModelForAudioFrameClassification,
        AutoModelForAudioXVector,
    )

    torch.manual_seed(0)
    xvector = {"tdnn_dim": [16, 16, 32], "tdnn_kernel": [3, 3, 1], "tdnn_dilation": [1, 2, 1],
               "xvector_output_dim": 16} if head == "xvector" else {}
    config = AutoConfig.for_model(model_type, num_labels=classes, **AUDIO_CONFIGS[model_type], **xvector)
    auto = {"classification": AutoModelForAudioClassification, "xvector": AutoModelForAudioXVector,
            "frames": AutoModelForAudioFrameClassification}[head]
    auto.from_config(config).save_pretrained(folder)
    if extractor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(extractor))
    return folder


def ctc_folder(folder: Path, model_type: str = "wav2vec2", extractor: dict | None = WAV2VEC2_EXTRACTOR) -> Path:
    """A tiny CTC speech recognizer of `model_type` (AUDIO_CONFIGS) over the sweep's character vocabulary
    (CTC_VOCAB: blank first, "|" between words), saved as Wav2Vec2ForCTC and its kin are, with its tokenizer's
    vocab.json and its feature extractor's `extractor` settings."""
    import torch
    from transformers import AutoConfig, AutoModelForCTC

    from bench.hf_architecture_sweep import CTC_VOCAB, save_ctc_tokenizer

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=len(CTC_VOCAB), pad_token_id=0, **AUDIO_CONFIGS[model_type])
    AutoModelForCTC.from_config(config).save_pretrained(folder)
    save_ctc_tokenizer(folder)
    if extractor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(extractor))
    return folder


def add_sentence_transformers_files(folder: Path, pooling: str = "mean", normalize: bool = True,
                                    max_seq_length: int | None = None) -> Path:
    """What sentence-transformers' `save` adds to a transformer folder (all-MiniLM-L6-v2's layout): modules.json,
    its settings, `1_Pooling/config.json` selecting `pooling`, and an empty `2_Normalize/` when `normalize`."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"__version__": {"sentence_transformers": "2.0.0"}, "prompts": {}, "default_prompt_name": None}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length or 256,
                                                                  "do_lower_case": False}))
    modes = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")
    flags = {f"pooling_mode_{mode}": mode.removesuffix("_tokens").removesuffix("_token") == pooling for mode in modes}
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **flags,
                                                                  "include_prompt": True}))
    return folder


def zip_bytes(folder: Path, top: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    """The folder's files (and subfolders) as a zip, at the top or inside one folder `top`, plus `extra` entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            archive.write(path, f"{top}/{name}" if top else name)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zipped_folder(tmp_path_factory, name: str, make_folder) -> Path:
    """A module-scoped upload: the folder `make_folder(path)` writes, zipped as `<name>.zip` in a fresh directory."""
    directory = tmp_path_factory.mktemp(name)
    archive = directory / f"{name}.zip"
    archive.write_bytes(zip_bytes(make_folder(directory / name)))
    return archive


def int8_job_and_rows(archive: Path, dataset: Path, workdir: Path, rows: int = 2):
    """An int8 PTQ job of the folder `archive` on `dataset` (latency not timed), and the first `rows` validation
    inputs of the dataset the job ran on (as the worker prepared them)."""
    import numpy as np
    import torch

    from compression.context import RunContext
    from compression.llm.pipeline import run_folder_pipeline
    from compression.specs import EvaluationSpec, PTQSpec

    result = run_folder_pipeline(archive, dataset, None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), workdir)
    with np.load(workdir / "dataset.npz") as arrays:
        return result, torch.from_numpy(arrays["val.x"][:rows])


def tar_bytes(folder: Path, extra: dict[str, bytes] | None = None, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, path.name)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


def jsonl_bytes(splits: dict[str, list[str]], labels: dict[str, list] | None = None) -> bytes:
    lines = []
    for split, texts in splits.items():
        for index, text in enumerate(texts):
            row = {"split": split, "text": text}
            if labels and split in labels:
                row["label"] = labels[split][index]
            lines.append(json.dumps(row))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return llama_folder(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return bert_folder(tmp_path_factory.mktemp("bert"))


def kd_and_ptq_job(archive: Path, rows: list[dict], task: str, workdir: Path, alpha: float = 0.5):
    """A folder job on `rows` (written as a .jsonl in `workdir`): KD with the upload as its own student (2 steps,
    `alpha` of the labels mixed in), then int8 PTQ; returns the pipeline's result."""
    from compression.context import RunContext
    from compression.llm.pipeline import run_folder_pipeline
    from compression.specs import EvaluationSpec, KDSpec, PTQSpec

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rows.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    return run_folder_pipeline(archive, workdir / "rows.jsonl", task,
                               [KDSpec(student={"kind": "input"}, alpha=alpha, training={"steps": 2, "batch_size": 4}),
                                PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                               workdir / "work")


# DETR's processor (resize by the shortest edge, ImageNet statistics), at a tiny model's size
DETECTION_PROCESSOR = {"image_processor_type": "DetrImageProcessor", "do_resize": True,
                       "size": {"shortest_edge": 64, "longest_edge": 64}, "do_rescale": True, "rescale_factor": 1 / 255,
                       "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
_DETECTION_BACKBONE = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
                       "out_features": ["stage2"]}


def detr_folder(folder: Path) -> Path:
    """A tiny DETR (transformers' own two-stage ResNet backbone, one encoder and one decoder layer, ten object
    queries, three classes and "no object"), its classifier's bias set so that a few queries hold confident
    objects, as a trained detector's do."""
    import torch
    from transformers import DetrConfig, DetrForObjectDetection

    torch.manual_seed(0)
    config = DetrConfig(backbone_config=_DETECTION_BACKBONE, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
                        num_queries=10, num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"},
                        label2id={"cat": 0, "dog": 1, "bird": 2})
    model = DetrForObjectDetection(config)
    with torch.no_grad():  # heads of a trained detector's scale (transformers starts the box head at zero)
        for parameter in (*model.class_labels_classifier.parameters(), *model.bbox_predictor.parameters()):
            parameter.normal_(0, 0.3)
        # queries that attend to different places (a random decoder gives every query the same output)
        model.model.query_position_embeddings.weight.mul_(30)
        for layer in model.model.decoder.layers:
            layer.encoder_attn.q_proj.weight.mul_(5)
            layer.encoder_attn.k_proj.weight.mul_(5)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DETECTION_PROCESSOR))
    return folder


def rt_detr_folder(folder: Path) -> Path:
    """A tiny RT-DETR (a four-stage ResNet whose last three stages its hybrid encoder reads, ten queries scored by
    a sigmoid per class): its forward takes `len()` of a batch tensor (`compression.symbolic_len`)."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection

    torch.manual_seed(0)
    backbone = {"model_type": "rt_detr_resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 24, 32],
                "depths": [1, 1, 1, 1], "out_features": ["stage2", "stage3", "stage4"]}
    config = RTDetrConfig(backbone_config=backbone, encoder_in_channels=[16, 24, 32], encoder_hidden_dim=32,
                          encoder_ffn_dim=32, encoder_attention_heads=2, d_model=32, decoder_in_channels=[32, 32, 32],
                          decoder_ffn_dim=32, decoder_layers=2, decoder_attention_heads=2, decoder_n_points=2,
                          num_queries=10, num_labels=3)
    RTDetrForObjectDetection(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DETECTION_PROCESSOR))
    return folder


DUAL_ENCODER_TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def dual_encoder_folder(folder: Path, model_type: str = "clip", seed: int = 0) -> Path:
    """A tiny image-text dual encoder (CLIP, SigLIP) with CORPUS's word-level tokenizer and a ViT image processor:
    32x32 images in patches of 8."""
    import torch
    from transformers import AutoConfig, AutoModel

    vocab = save_tokenizer(folder)
    config = AutoConfig.for_model(model_type,
                                  vision_config={**DUAL_ENCODER_TOWER, "image_size": 32, "patch_size": 8},
                                  # CLIP pools its texts at the end-of-text token; 2 is the legacy id that
                                  # makes it take each text's largest token id instead
                                  text_config={**DUAL_ENCODER_TOWER, "vocab_size": vocab,
                                               "max_position_embeddings": 64, "eos_token_id": 2},
                                  **({"projection_dim": 16} if model_type == "clip" else {}))
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    return folder


def settle_owl_boxes(model, scale: float = 0.01):
    """An OWL detector whose box head's last layer is scaled down, so that each patch's box sits near the patch
    (the box bias OWL adds to the head's output), as a trained one's do: a random head's large outputs saturate
    the sigmoid into boxes of no width, which no detection can overlap, not even the same box."""
    import torch

    with torch.no_grad():
        model.box_head.dense2.weight.mul_(scale)
        model.box_head.dense2.bias.mul_(scale)
    return model


def owl_folder(folder: Path, model_type: str = "owlv2", seed: int = 0) -> Path:
    """A tiny open-vocabulary detector (`Owlv2ForObjectDetection`, or OWL-ViT's) with CORPUS's word-level
    tokenizer and a ViT image processor: 32x32 images in patches of 8, a box and a score per query for each of the
    16 patches."""
    import torch
    from transformers import AutoConfig, AutoModelForZeroShotObjectDetection

    vocab = save_tokenizer(folder)
    config = AutoConfig.for_model(model_type, vision_config={**DUAL_ENCODER_TOWER, "image_size": 32, "patch_size": 8},
                                  text_config={**DUAL_ENCODER_TOWER, "vocab_size": vocab,
                                               "max_position_embeddings": 16, "eos_token_id": 2},
                                  projection_dim=DUAL_ENCODER_TOWER["hidden_size"])
    torch.manual_seed(seed)
    model = AutoModelForZeroShotObjectDetection.from_config(config)
    settle_owl_boxes(model)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    return folder


def grounding_dino_folder(folder: Path, seed: int = 0) -> Path:
    """A tiny Grounding DINO (`GroundingDinoForObjectDetection`: a two-stage Swin over 32x32 images, a two-layer BERT
    reading CORPUS's words with full stops split off, one encoder and two decoder layers, ten object queries, at
    most 16 text tokens) with a ViT image processor."""
    import torch
    from transformers import AutoConfig, GroundingDinoForObjectDetection

    vocab = save_tokenizer(folder, mask=True, punctuation=True)
    backbone = {"model_type": "swin", "image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
                "num_heads": [2, 2], "window_size": 4, "out_features": ["stage1", "stage2"]}
    text = {"model_type": "bert", **DUAL_ENCODER_TOWER, "vocab_size": vocab, "max_position_embeddings": 32}
    config = AutoConfig.for_model("grounding-dino", backbone_config=backbone, text_config=text, d_model=32,
                                  encoder_layers=1, decoder_layers=2, num_queries=10, encoder_ffn_dim=32,
                                  decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
                                  num_feature_levels=2, max_text_len=16, use_timm_backbone=False)
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    return folder


def vision_encoder_decoder_folder(folder: Path, decoder: str = "trocr", weight_scale: float = 0.3) -> Path:
    """A tiny VisionEncoderDecoderModel as TrOCR (`decoder` "trocr") and ViT-GPT2 ("gpt2") are saved: a ViT encoder
    of 32x32 images, a decoder with cross-attention writing CORPUS's words ([EOS] starts and ends its output), the
    word-level tokenizer and a ViT image processor; its weights drawn at `weight_scale` so that it writes varied
    tokens rather than its start token again and again."""
    import torch
    from transformers import GPT2Config, TrOCRConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    vocab = save_tokenizer(folder)
    encoder = ViTConfig(**DUAL_ENCODER_TOWER, image_size=32, patch_size=8)
    tokens = {"bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}
    decoder = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128, add_cross_attention=True,
                         is_decoder=True, **tokens) if decoder == "gpt2" else TrOCRConfig(
        vocab_size=vocab, d_model=32, decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=64,
        max_position_embeddings=128, cross_attention_hidden_size=32, decoder_start_token_id=2, **tokens)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = 2, 2, 1
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, weight_scale)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    return folder
