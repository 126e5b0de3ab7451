"""Every architecture family a user might upload as a Hugging Face folder, run through the service's own path:
a tiny randomly initialised model of each `model_type` (hidden 32-64, 1-2 layers, vocabulary 128) with a
word-level tokenizer, saved with `save_pretrained` (safetensors), zipped, checked by the upload check
(`compression.archive.hf_folder`) and run by `compression.llm.pipeline.run_folder_pipeline` with each method's
default spec (few steps and samples, so a case takes seconds). Nothing is downloaded.

Printed: one row per model_type x task x method: ok or the first line of the error, seconds, how much smaller
than the upload the stage's model is (with int8 PTQ's quantized layer count), and the Hugging Face
folder the job wrote (for encoders and classifiers the pipeline loads it back with `from_pretrained` and compares
it with the stage's model: the relative difference, or why none was written; for causal LMs the stage's
perplexity against the upload's: of `llm_ptq`'s folder loaded back with transformers, and of the other methods'
programs on the rows, next to their folder's check).

Image classifiers (IMAGE_CLASSIFIERS, task image-classification: a tiny 32x32 model of each family with a
preprocessor_config.json instead of a tokenizer, run on an .npz of random uint8 images) and audio classifiers
(AUDIO_CLASSIFIERS, task audio-classification: waveform models on random 1600-sample waveforms, AST and Whisper on
random features) and CTC speech recognizers (SPEECH_RECOGNIZERS, task speech-recognition: the same inputs,
unlabelled, with a character vocab.json) are swept only when asked for: `--tasks image-classification` /
`audio-classification` / `speech-recognition`, or `--types` naming them; so are the encoder-decoders that write
text (SEQ2SEQ_LMS, task seq2seq-lm: `--tasks seq2seq-lm`, unlabelled text, each stage measured against what the
upload writes, with the share of those tokens it predicts on the row) and those that write text for audio
(SPEECH_SEQ2SEQS, task speech-seq2seq: `--tasks speech-seq2seq`, the same audio, unlabelled). A task named in
`--tasks` is swept for every listed type whose family ships a head for it (`--tasks sequence-classification` runs
every encoder's and decoder's classifier, not only CLASSIFIERS').

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_architecture_sweep [--types bert,llama] [--methods ptq,kd]
        [--tasks token-classification] [--dtype bfloat16] [--json sweep.json]
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_architecture_sweep --tasks image-classification
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_architecture_sweep --tasks audio-classification
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_architecture_sweep --tasks speech-recognition
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_architecture_sweep --tasks seq2seq-lm
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.hf_architecture_sweep --tasks speech-seq2seq
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import torch

from compression.archive.hf_architectures import (
    ARRAY_TASKS,
    AUDIO_FRAMES,
    AUDIO_TASKS,
    AUDIO_XVECTOR,
    GROUNDED_DETECTORS,
    IMAGE_MATTING,
    IMAGE_TASKS,
    IMAGE_TO_IMAGE,
    MULTIPLE_CHOICE,
    NORMAL_ESTIMATION,
    POINTMAP_ESTIMATION,
    POSE_ESTIMATION,
    SEQ2SEQ_TASKS,
    VIDEO_CLASSIFICATION,
    ZERO_SHOT_DETECTION,
    ZERO_SHOT_IMAGES,
    image_text_encoder,
    model_types_by_task,
)
from compression.archive.hf_folder import read_hf_folder
from compression.archive.time_series import TIME_SERIES_TASKS, TS_CLASSIFICATION, TS_FORECASTING, TS_REGRESSION
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, LLMPTQSpec, PruneSpec, PTQSpec, QATSpec

VOCAB = 320  # a byte-level BPE tokenizer needs its 256 bytes
WORDS = ("the cat dog bird fox sees finds likes ball stick box house tree near under small old quiet river "
         "city").split()
ENCODERS = ("bert", "roberta", "distilbert", "albert", "electra", "deberta-v2", "mpnet", "xlm-roberta", "modernbert",
            # added 2026-12-02 (docs/huggingface.md says what each does)
            "camembert", "mobilebert", "squeezebert", "convbert", "big_bird", "ernie", "xlm", "data2vec-text",
            "megatron-bert", "rembert", "roformer", "esm", "ibert", "nystromformer", "yoso", "mra", "roc_bert",
            "longformer", "xmod")
# The installed transformers' text-only decoders swept last (2026-12-06, second sweep); their configs are shrunk by
# SHRUNK_WHERE_PRESENT.
LATER_DECODERS = ("apertus1p5_text", "aria_text", "axk1", "axk2", "bailing_hybrid", "beam", "cpmant", "ctrl", "cwm",
                  "deepseek_v32", "deepseek_v4", "dory", "dots3_note_text", "ergo", "exaone_moe", "flint",
                  "gemma3n_text", "gemma4_unified_text", "glm_moe_dsa", "gpt-sw3", "gpt_neox_japanese", "granite_swa",
                  "granitemoe_swa", "granitemoeshared", "hrm_text", "hy_v3", "hy_v4", "hyperclovax", "inkling_text",
                  "iquestcoder", "jais2", "jetmoe", "kimi_linear", "kolibri1", "kolibri1_1", "laguna", "lara_mini",
                  "lfm3", "llama4_text", "longcat_flash", "mimo_v2_flash", "minicpm3", "minicpm5_moe",
                  "minimax_m3_vl_text", "mistral4", "modernbert-decoder", "olmo_hybrid", "openai-gpt", "param2moe",
                  "qwen3_5_moe_text", "qwen4_exp_text", "reformer", "sarvam_mla", "sarvam_moe", "xlstm", "youtu",
                  "zamba2", "zaya")
DECODERS = ("gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "phi", "phi3", "opt", "bloom",
            "falcon", "gemma", "gemma2", "olmo", "stablelm", "mixtral", "qwen2_moe",
            # added 2026-12-02
            "gpt_bigcode", "gptj", "codegen", "starcoder2", "granite", "cohere", "mpt", "xglm", "biogpt", "olmo2",
            "helium", "glm", "smollm3", "exaone4", "persimmon", "nemotron", "arcee", "ministral",
            # mixtures of experts, added 2026-12-04 (their experts split into linear layers: compression.moe_experts)
            "qwen3_moe", "olmoe", "gpt_oss", "granitemoe", "phimoe",
            # newer families, added 2026-12-04 (dense, then mixtures of experts)
            "gemma3_text", "gemma4_text", "glm4", "ernie4_5", "hunyuan_v1_dense", "seed_oss", "lfm2", "olmo3",
            "cohere2", "apertus", "bitnet", "doge", "deepseek_v3", "ernie4_5_moe", "qwen3_next", "dots1", "glm4_moe",
            "minimax", "hunyuan_v1_moe", "lfm2_moe",
            # state-space and recurrent models, added 2026-12-05
            "mamba", "mamba2", "falcon_mamba", "rwkv",
            # hybrids of state-space (or recurrent) and attention layers, one of each here
            "jamba", "bamba", "granitemoehybrid", "recurrent_gemma", "falcon_h1", "nemotron_h",
            # families of the installed transformers not swept before, added 2026-12-06 (dense, then mixtures)
            "exaone", "ministral3", "solar_open", "internlm3", "vaultgemma", "diffllama", "flex_olmo", "mellum",
            "nanochat", "qwen3_5_text", "minimax_m2", "deepseek_v2", "cohere2_moe", "glm4_moe_lite", "afmoe",
            # the rest of the installed transformers' text-only decoders, added 2026-12-06 (second sweep)
            *LATER_DECODERS)
# Sequence-classification heads: a few encoders and decoders (a decoder classifies from its last real token).
CLASSIFIERS = ("bert", "roberta", "deberta-v2", "modernbert", "llama", "qwen2", "gpt2", "mixtral", "qwen2_moe")
# Token-classification heads (NER taggers), trained on word tags (`tags` in the .jsonl).
TAGGERS = ("bert", "roberta", "distilbert", "electra", "deberta-v2", "xlm-roberta", "modernbert", "llama", "qwen2",
           "gpt2")
# Extractive question-answering heads (SQuAD readers), run on question/context pairs.
READERS = ("bert", "roberta", "distilbert", "electra", "deberta-v2", "xlm-roberta", "modernbert", "albert", "llama",
           "qwen2")
# Multiple-choice heads (SWAG, RACE), run on a text and four endings.
CHOOSERS = ("bert", "roberta", "distilbert", "albert", "electra", "deberta-v2", "xlm-roberta", "modernbert", "mpnet")
# Image classifiers (task image-classification), one per family: vision transformers, CNNs and hybrids.
IMAGE_CLASSIFIERS = ("vit", "deit", "beit", "dinov2", "swin", "convnext", "convnextv2", "resnet", "regnet",
                     "mobilenet_v2", "efficientnet", "mobilevit", "levit", "poolformer",
                     # added 2026-12-06
                     "swinv2", "vit_msn", "data2vec-vision", "dinov2_with_registers", "ijepa", "pvt_v2", "segformer",
                     "mobilenet_v1", "bit", "focalnet", "hiera", "hgnet_v2")
# Audio classifiers (task audio-classification): waveform models, and two that read spectrogram features.
AUDIO_CLASSIFIERS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "sew", "unispeech",
                     "audio-spectrogram-transformer", "whisper",
                     "unispeech-sat", "wav2vec2-conformer", "sew-d")  # the last three added 2026-12-06
# Speaker-verification (x-vector) and audio-frame-classification heads: the waveform models that ship them.
SPEAKER_MODELS = ("wav2vec2", "wavlm", "data2vec-audio", "unispeech-sat", "wav2vec2-conformer", "wav2vec2-bert")
# CTC speech recognizers (task speech-recognition): the waveform models' CTC heads, and the ones that read log-mel
# features (w2v-BERT's stacked frames; Parakeet's, LASR's and Granite Speech's mel frames).
SPEECH_RECOGNIZERS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "sew", "sew-d", "unispeech", "unispeech-sat",
                      "wav2vec2-conformer", "wav2vec2-bert", "parakeet_ctc", "lasr_ctc", "granite_speech5_ctc",
                      "omniasr_ctc")
# Encoder-decoders that write text (task seq2seq-lm, added 2026-12-06): each family transformers builds with
# AutoModelForSeq2SeqLM that reads text alone (the speech and audio LMs of that mapping read audio too).
SEQ2SEQ_LMS = ("t5", "mt5", "umt5", "longt5", "switch_transformers", "t5gemma", "t5gemma2", "bart", "mbart", "plbart",
               "mvp", "marian", "pegasus", "pegasus_x", "bigbird_pegasus", "led", "blenderbot", "blenderbot-small",
               "m2m_100", "nllb-moe", "fsmt", "prophetnet", "seamless_m4t", "seamless_m4t_v2")
# Encoder-decoders that write text for audio (task speech-seq2seq, added 2026-12-06): the ones transformers builds
# with AutoModelForSpeechSeq2Seq whose encoder reads the audio (the mapping's audio LMs and text-to-speech models
# are refused at upload); unlabelled audio, each stage measured against what the upload writes.
SPEECH_SEQ2SEQS = ("whisper", "speech_to_text", "moonshine", "speecht5", "canary", "cohere_asr")
FEW_STEPS = {"steps": 2, "batch_size": 8, "warmup_steps": 0}
ENCODER_METHODS = {
    "ptq": PTQSpec(calibration_samples=16),
    "ptq_w8": PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False, selection_samples=16),
    "ptq_w4": PTQSpec(weights={"bits": 4, "granularity": "per_group", "group_size": 32}, activations=None,
                      export_onnx=False, selection_samples=16),
    "prune": PruneSpec(),
    "prune_structured": PruneSpec(kind="structured", sparsity=0.25),
    # half of every group: the tiny configs' 2 key/value heads (4 query heads) lose one, so heads show as pruned
    "prune_heads": PruneSpec(kind="structured", sparsity=0.5),
    "ipq": IPQSpec(centroids=16, kmeans_iterations=2, training=FEW_STEPS, num_groups=1, min_weights=256),
    "kd_layers": KDSpec(student={"kind": "layers", "keep": 1}, training=FEW_STEPS),
    "qat": QATSpec(calibration_samples=16, training=FEW_STEPS),
}
LLM_METHODS = {
    "llm_gptq": LLMPTQSpec(algorithm="gptq", bits=4, group_size=32, calibration={"samples": 4, "sequence_length": 16},
                           evaluation={"context_length": 16, "generation_tokens": 0}),
    "llm_awq": LLMPTQSpec(algorithm="awq", bits=4, group_size=32, calibration={"samples": 4, "sequence_length": 16},
                          evaluation={"context_length": 16, "generation_tokens": 0}),
    "llm_rtn": LLMPTQSpec(algorithm="rtn", bits=8, group_size=None, evaluation={"context_length": 16,
                                                                                "generation_tokens": 0}),
}
HIDDEN, HEADS, LAYERS = 64, 4, 2
KEY_VALUE_HEADS: int | None = None  # --kv-heads: every num_key_value_heads set to this (1: multi-query attention)
# The sizes every config is given under transformers' common names (each config's attribute_map renames them),
# plus what a few families name otherwise or need consistent with them.
COMMON = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
          "intermediate_size": 2 * HIDDEN, "max_position_embeddings": 512, "pad_token_id": 1, "eos_token_id": 2,
          "bos_token_id": 2, "cls_token_id": 3, "sep_token_id": 4}
SPECIFIC = {
    # Marian's default start token is its 58100-row vocabulary's pad: the tiny vocabulary's pad starts its outputs
    "marian": {"decoder_start_token_id": 1, "decoder_vocab_size": VOCAB},
    "albert": {"embedding_size": 32},
    "electra": {"embedding_size": 32},
    "mobilebert": {"embedding_size": 32, "true_hidden_size": 32, "intra_bottleneck_size": 32},
    "distilbert": {"dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS, "hidden_dim": 2 * HIDDEN},
    "gpt2": {"n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS, "n_positions": 512},
    "gpt_neo": {"num_layers": LAYERS, "num_heads": HEADS, "attention_types": [[["global", "local"], 1]],
                "window_size": 16},
    "bloom": {"n_layer": LAYERS, "n_head": HEADS},
    "falcon": {"num_kv_heads": HEADS, "new_decoder_architecture": False},
    "opt": {"ffn_dim": 2 * HIDDEN, "word_embed_proj_dim": HIDDEN},
    "gemma": {"head_dim": 16, "num_key_value_heads": 2},
    "gemma2": {"head_dim": 16, "num_key_value_heads": 2, "sliding_window": 16},
    "qwen3": {"head_dim": 16, "num_key_value_heads": 2},
    "mistral": {"num_key_value_heads": 2, "sliding_window": None},
    "llama": {"num_key_value_heads": 2},
    "qwen2": {"num_key_value_heads": 2},
    "phi3": {"num_key_value_heads": 2},
    "stablelm": {"num_key_value_heads": 2},
    "mixtral": {"num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2_moe": {"num_key_value_heads": 2, "num_experts": 4, "moe_intermediate_size": 32,
                  "shared_expert_intermediate_size": 64},
    "qwen3_moe": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
                  "moe_intermediate_size": 32},
    "olmoe": {"num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2},
    "gpt_oss": {"head_dim": 16, "num_key_value_heads": 2, "num_local_experts": 4, "sliding_window": 16},
    "granitemoe": {"num_key_value_heads": 2, "num_local_experts": 4},
    "plbart": {"decoder_attention_heads": HEADS},  # its attribute_map sets the encoder's heads only
    # sliding windows of 16 tokens: the default 512 pads every row to 512 tokens
    "longformer": {"attention_window": 16},
    "xmod": {"default_language": "en_XX"},  # the language its adapters run for inputs without `lang_ids`
    "led": {"attention_window": 16, "decoder_attention_heads": HEADS},
    "phimoe": {"num_key_value_heads": 2, "num_local_experts": 4},
    **{model_type: {"head_dim": 16, "num_key_value_heads": 2} for model_type in (
        "glm4", "ernie4_5", "hunyuan_v1_dense", "seed_oss", "lfm2", "olmo3", "apertus", "bitnet", "doge")},
    "gemma3_text": {"head_dim": 16, "num_key_value_heads": 2, "sliding_window": 16},
    "gemma4_text": {"head_dim": 16, "num_key_value_heads": 2, "sliding_window": 16, "global_head_dim": 16,
                    "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16},
    "cohere2": {"head_dim": 16, "num_key_value_heads": 2, "sliding_window": 16},
    "deepseek_v3": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_group": 1,
                    "topk_group": 1, "first_k_dense_replace": 1, "q_lora_rank": None, "kv_lora_rank": 16,
                    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "num_key_value_heads": HEADS},
    "ernie4_5_moe": {"head_dim": 16, "num_key_value_heads": 2, "moe_num_experts": 4, "moe_k": 2,
                     "moe_intermediate_size": 32},
    "qwen3_next": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
                   "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "linear_num_key_heads": 2,
                   "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                   # as the real model, a full-attention layer among the linear ones (two layers would otherwise
                   # both be linear, which transformers' generation cache does not support)
                   "layer_types": ["linear_attention", "full_attention"]},
    "dots1": {"head_dim": 16, "num_key_value_heads": 2, "n_routed_experts": 4, "n_shared_experts": 1,
              "num_experts_per_tok": 2, "moe_intermediate_size": 32, "n_group": 1, "topk_group": 1,
              "first_k_dense_replace": 1},
    "glm4_moe": {"head_dim": 16, "num_key_value_heads": 2, "n_routed_experts": 4, "num_experts_per_tok": 2,
                 "moe_intermediate_size": 32, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1},
    "minimax": {"head_dim": 16, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    "hunyuan_v1_moe": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "moe_topk": 2},
    "lfm2_moe": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
                 "moe_intermediate_size": 32, "num_dense_layers": 1, "layer_types": ["conv", "full_attention"]},
    **{model_type: {"state_size": 8, "expand": 2, "conv_kernel": 4, "time_step_rank": 8}
       for model_type in ("mamba", "falcon_mamba")},
    "mamba2": {"state_size": 8, "expand": 2, "conv_kernel": 4, "head_dim": 16, "num_heads": 8, "n_groups": 1,
               "chunk_size": 16},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "mamba_d_state": 8, "mamba_dt_rank": 32,
              "num_key_value_heads": 2, "num_experts": 4, "expert_layer_period": 2, "expert_layer_offset": 1},
    "bamba": {"attn_layer_indices": [1], "mamba_n_heads": 8, "mamba_d_state": 8, "mamba_n_groups": 1,
              "num_key_value_heads": 2, "mamba_chunk_size": 16},
    "granitemoehybrid": {"layer_types": ["mamba", "attention"], "mamba_n_heads": 8, "mamba_d_state": 8,
                         "mamba_n_groups": 1, "num_key_value_heads": 2, "num_local_experts": 4,
                         "num_experts_per_tok": 2, "shared_intermediate_size": 64, "mamba_chunk_size": 16},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"], "lru_width": HIDDEN, "attention_window_size": 16,
                        "num_key_value_heads": 2, "head_dim": 16},
    "falcon_h1": {"mamba_d_ssm": 2 * HIDDEN, "mamba_n_heads": 8, "mamba_d_state": 8, "mamba_n_groups": 1,
                  "num_key_value_heads": 2, "head_dim": 16, "mamba_chunk_size": 16},
    "nemotron_h": {"layers_block_type": ["mamba", "attention"], "mamba_num_heads": 8, "mamba_head_dim": 16,
                   "ssm_state_size": 8, "n_groups": 1, "num_key_value_heads": 2, "head_dim": 16, "chunk_size": 16},
    "modernbert": {"global_attn_every_n_layers": 2, "local_attention": 16},
    "deberta-v2": {"pooler_hidden_size": HIDDEN},
    "xlm-roberta": {},
    "gptj": {"rotary_dim": 16},
    "codegen": {"rotary_dim": 16},
    "helium": {"head_dim": 16, "num_key_value_heads": 2},
    "exaone4": {"head_dim": 16, "num_key_value_heads": 2},
    "ministral": {"head_dim": 16, "num_key_value_heads": 2},
    "nemotron": {"head_dim": 16, "num_key_value_heads": 2},
    "squeezebert": {"embedding_size": HIDDEN},
    "funnel": {"block_sizes": [1, 1], "num_decoder_layers": 1},
    "xlnet": {"d_head": HIDDEN // HEADS},
    # decoders added on 2026-12-06 (`--types` of the second decoder table in docs/huggingface.md); the mixtures
    # with 4 experts of 32 channels, each token routed to 2 (their defaults hold 7 to 256 experts)
    **{model_type: {"head_dim": 16, "num_key_value_heads": 2} for model_type in (
        "exaone", "ministral3", "internlm3", "vaultgemma", "diffllama")},
    "solar_open": {"head_dim": 16, "num_key_value_heads": 2, "n_routed_experts": 4, "num_experts_per_tok": 2,
                   "moe_intermediate_size": 32},
    "flex_olmo": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2},
    "mellum": {"head_dim": 16, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2,
               "moe_intermediate_size": 32, "layer_types": ["full_attention"] * LAYERS,
               "mlp_layer_types": ["sparse"] * LAYERS},
    "minimax_m2": {"head_dim": 16, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    "deepseek_v2": {"n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
                    "moe_intermediate_size": 32, "first_k_dense_replace": 1, "q_lora_rank": None, "kv_lora_rank": 16,
                    "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "num_key_value_heads": HEADS},
    "glm4_moe_lite": {"n_routed_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                      "q_lora_rank": None, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
                      "v_head_dim": 16, "num_key_value_heads": HEADS, "mlp_layer_types": ["dense", "sparse"]},
    "cohere2_moe": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
                    "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"],
                    "mlp_layer_types": ["sparse"] * LAYERS},
    "afmoe": {"head_dim": 16, "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2,
              "num_shared_experts": 1, "moe_intermediate_size": 32, "num_dense_layers": 1, "sliding_window": 16,
              "layer_types": ["sliding_attention", "full_attention"]},
    "qwen3_5_text": {"head_dim": 16, "num_key_value_heads": 2, "linear_num_key_heads": 2,
                     "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                     "layer_types": ["linear_attention", "full_attention"]},
    # LATER_DECODERS: hybrids with a full-attention layer among the linear ones, as their real configs have
    **{model_type: {"layer_types": ["linear_attention", "full_attention"]} for model_type in (
        "bailing_hybrid", "kimi_linear", "qwen3_5_moe_text")},
    "dots3_note_text": {"num_key_value_heads": HEADS},
    "reformer": {"is_decoder": True, "axial_pos_embds_dim": [32, 32], "axial_pos_shape": [16, 32],
                 "attn_layers": ["local", "local"], "local_attn_chunk_length": 16},
    "zamba2": {"layer_types": ["mamba", "hybrid"], "hybrid_layer_ids": [1]},
    "zaya": {"num_experts_per_tok": 1},
    "gemma3n_text": {"num_kv_shared_layers": 0, "layer_types": ["sliding_attention", "full_attention"],
                     "vocab_size_per_layer_input": VOCAB, "hidden_size_per_layer_input": 16},
    "kolibri1_1": {"index_num_heads": 2, "index_layers": [1],
                   "layer_types": ["sliding_attention", "indexed_attention"]},
    "qwen4_exp_text": {"layer_types": ["linear_attention", "indexed_attention"], "indexer_n_heads": 2,
                       "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 16,
                       "indexer_compress_ratio": 4},
}
# COMMON fields a config refuses to be given: Funnel derives its depth from `block_sizes`, XLNet has no length
# limit.
UNSETTABLE = {"funnel": ("num_hidden_layers",), "xlnet": ("max_position_embeddings",)}
# LATER_DECODERS get these sizes where their default config has the field (SPECIFIC still wins): the defaults of
# the newer mixtures hold 64-512 experts of 512-4096 channels and 128-wide heads, which made a "tiny" case take
# minutes (Kimi-Linear: 55M parameters, 585 s for one int8 job).
SHRUNK_WHERE_PRESENT = {
    "head_dim": 16, "num_key_value_heads": 2, "global_head_dim": 16, "swa_head_dim": 16, "swa_num_key_value_heads": 2,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "num_experts_per_token": 2, "moe_topk": 2, "moe_k": 2,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "expert_ffn_hidden_size": 32,
    "n_group": 1, "topk_group": 1, "num_expert_group": 1,
    # multi-head latent attention and its sparse indexer
    "q_lora_rank": 16, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
    "index_head_dim": 16, "index_n_heads": 4,
    # linear-attention layers
    "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
    "linear_num_heads": 4, "linear_head_dim": 16,
}

# Image configs name their sizes otherwise (hidden_sizes, depths, embed_dim, ...) and get none of COMMON: each one
# here runs on 32x32 RGB images (image_size 32 where the config has one) with 2k-70k parameters.
IMAGE_SIZE = 32
VISION_TRANSFORMER = {"image_size": IMAGE_SIZE, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "intermediate_size": 64}
# The image-text dual encoders (task image-feature-extraction: their image embedding), each with a tiny vision
# transformer and text tower unless listed (ALIGN's vision tower is an EfficientNet); then two vision towers saved
# alone (CLIPVisionModel: their features).
DUAL_ENCODERS = ("clip", "siglip", "siglip2", "align", "altclip", "chinese_clip", "metaclip_2", "clipseg",
                       "tipsv2", "clip_vision_model", "chinese_clip_vision_model")
TEXT_TOWER = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64}
# A zero-shot classifier's job: the image's labels (0..2) name these; each label alone is its text, so that
# every text tower's pooling (CLIP's causal one at the first token of these tiny configs) tells them apart.
ZERO_SHOT_LABELS = {"candidate_labels": ["cat", "dog", "bird"], "hypothesis_template": "{}"}
IMAGE_TEXT_SPECIFIC = {
    "clip": {"vision_config": VISION_TRANSFORMER, "text_config": TEXT_TOWER, "projection_dim": 16},
    "align": {"vision_config": {"image_size": IMAGE_SIZE, "width_coefficient": 0.1, "depth_coefficient": 0.1,
                                "hidden_dim": 64}, "text_config": TEXT_TOWER,
              # its image embedding is the EfficientNet's pooled output (32 wide here), unprojected: the text
              # embedding must match it for the scores (zero-shot-image-classification)
              "projection_dim": 32},
}
IMAGE_SPECIFIC = {
    "vit": VISION_TRANSFORMER,
    "clip_vision_model": VISION_TRANSFORMER,  # a dual encoder's vision tower saved alone (CLIPVisionModel)
    "chinese_clip_vision_model": VISION_TRANSFORMER,
    "deit": VISION_TRANSFORMER,
    "beit": {**VISION_TRANSFORMER, "use_mean_pooling": True},
    "dinov2": {**{k: v for k, v in VISION_TRANSFORMER.items() if k != "intermediate_size"}, "mlp_ratio": 2},
    "swin": {"image_size": IMAGE_SIZE, "patch_size": 2, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2],
             "window_size": 4, "mlp_ratio": 2.0},
    "convnext": {"image_size": IMAGE_SIZE, "num_stages": 2, "hidden_sizes": [16, 32], "depths": [1, 1],
                 "patch_size": 4},
    "convnextv2": {"image_size": IMAGE_SIZE, "num_stages": 2, "hidden_sizes": [16, 32], "depths": [1, 1],
                   "patch_size": 4},
    "resnet": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]},  # any image size
    "regnet": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "groups_width": 8},
    "mobilenet_v2": {"image_size": IMAGE_SIZE, "depth_multiplier": 0.1, "min_depth": 4, "expand_ratio": 2,
                     "finegrained_output": False},
    # hidden_dim: the top convolution's width, round_filters(1280) = 128 at width 0.1
    "efficientnet": {"image_size": IMAGE_SIZE, "width_coefficient": 0.1, "depth_coefficient": 0.1,
                     "hidden_dim": 128},
    "mobilevit": {"image_size": IMAGE_SIZE, "patch_size": 2, "hidden_sizes": [16, 16, 24],
                  "neck_hidden_sizes": [8, 8, 16, 16, 16, 24, 48], "num_attention_heads": 2, "mlp_ratio": 2.0,
                  "expand_ratio": 2.0},
    "levit": {"image_size": IMAGE_SIZE, "patch_size": 16, "hidden_sizes": [16, 32, 48],
              "num_attention_heads": [1, 2, 3], "depths": [1, 1, 1], "key_dim": [8, 8, 8], "mlp_ratio": [2, 2, 2],
              "attention_ratio": [2, 2, 2]},
    "poolformer": {"num_encoder_blocks": 2, "depths": [1, 1], "hidden_sizes": [16, 32], "patch_sizes": [7, 3],
                   "strides": [4, 2], "padding": [2, 1], "pool_size": 3, "mlp_ratio": 2.0},
    # added 2026-12-06
    "swinv2": {"image_size": IMAGE_SIZE, "patch_size": 2, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2],
               "window_size": 4, "mlp_ratio": 2.0},
    "vit_msn": VISION_TRANSFORMER,
    "ijepa": VISION_TRANSFORMER,
    "data2vec-vision": {**VISION_TRANSFORMER, "use_mean_pooling": True},
    "dinov2_with_registers": {**{k: v for k, v in VISION_TRANSFORMER.items() if k != "intermediate_size"},
                              "mlp_ratio": 2, "num_register_tokens": 2},
    **{model_type: {"image_size": IMAGE_SIZE, "num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1],
                    "hidden_sizes": [16, 32], "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 2],
                    "mlp_ratios": [2, 2], "decoder_hidden_size": 32} for model_type in ("pvt_v2", "segformer")},
    "mobilenet_v1": {"image_size": IMAGE_SIZE, "depth_multiplier": 0.1, "min_depth": 4},
    "bit": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "num_groups": 4},
    "focalnet": {"image_size": IMAGE_SIZE, "patch_size": 4, "embed_dim": 16, "depths": [1, 1],
                 "focal_levels": [2, 2], "focal_windows": [3, 3], "mlp_ratio": 2.0},
    "hiera": {"image_size": [IMAGE_SIZE, IMAGE_SIZE], "patch_size": [3, 3], "patch_stride": [2, 2],
              "patch_padding": [1, 1], "embed_dim": 16, "num_heads": [1, 2], "depths": [1, 1], "query_stride": [2, 2],
              "num_query_pool": 1, "masked_unit_size": [4, 4], "masked_unit_attention": [True, False],
              "mlp_ratio": 2.0},
    "hgnet_v2": {"stem_channels": [3, 8, 8], "stage_in_channels": [8, 16], "stage_mid_channels": [8, 16],
                 "stage_out_channels": [16, 32], "stage_num_blocks": [1, 1], "stage_downsample": [False, True],
                 "stage_light_block": [False, False], "stage_kernel_size": [3, 3], "stage_numb_of_layers": [2, 2],
                 "hidden_sizes": [16, 32], "depths": [1, 1]},
}
# What a segmentation head of these types needs beyond the classifier's tiny config: the encoder layers its decoder
# reads (BEiT, data2vec-vision, DPT: a feature map from each of four layers, so four layers) and DPT's neck widths.
TINY_SWIN_BACKBONE = {"model_type": "swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                      "image_size": IMAGE_SIZE, "out_features": ["stage1", "stage2", "stage3", "stage4"]}
SEGMENTATION_SPECIFIC = {
    "beit": {"num_hidden_layers": 4, "out_indices": [1, 2, 3, 4], "pool_scales": [1, 2], "auxiliary_channels": 16},
    "data2vec-vision": {"num_hidden_layers": 4, "out_indices": [1, 2, 3, 4], "pool_scales": [1, 2],
                        "auxiliary_channels": 16},
    # UperNet over a two-stage ConvNeXt backbone
    "upernet": {"backbone_config": {"model_type": "convnext", "num_stages": 2, "hidden_sizes": [16, 32],
                                    "depths": [1, 1], "out_features": ["stage1", "stage2"]},
                "hidden_size": 32, "use_auxiliary_head": False, "pool_scales": [1, 2]},
    "dpt": {**VISION_TRANSFORMER, "num_hidden_layers": 4, "backbone_out_indices": [0, 1, 2, 3],
            "neck_hidden_sizes": [8, 16, 16, 32], "fusion_hidden_size": 16, "auxiliary_loss": False},
    # mask classifiers (their semantic class map): over a four-stage Swin, ten object queries
    "mask2former": {"backbone_config": TINY_SWIN_BACKBONE, "hidden_dim": 32, "mask_feature_size": 32,
                    "feature_size": 32, "encoder_layers": 1, "decoder_layers": 2, "num_queries": 10,
                    "encoder_feedforward_dim": 64, "dim_feedforward": 64, "num_attention_heads": 2},
    "maskformer": {"backbone_config": TINY_SWIN_BACKBONE, "num_queries": 10, "fpn_feature_size": 32,
                   "mask_feature_size": 32,
                   "decoder_config": {"model_type": "detr", "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
                                      "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                                      "decoder_ffn_dim": 64, "encoder_ffn_dim": 64, "num_queries": 10}},
    "eomt": {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 64,
             "image_size": IMAGE_SIZE, "patch_size": 8, "num_queries": 10, "num_blocks": 2},
}
# Depth models' tiny configs (task depth-estimation): Depth Anything over a four-layer DINOv2, DPT as above.
DEPTH_SPECIFIC = {
    "depth_anything": {"backbone_config": {"model_type": "dinov2", "image_size": 28, "patch_size": 14,
                                           "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2,
                                           "mlp_ratio": 2, "out_indices": [1, 2, 3, 4],
                                           "reshape_hidden_states": False},
                       "reassemble_hidden_size": 32, "patch_size": 14, "neck_hidden_sizes": [8, 16, 16, 32],
                       "fusion_hidden_size": 16, "head_hidden_size": 8},
    "glpn": {"num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1], "hidden_sizes": [16, 32],
             "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 2], "mlp_ratios": [2, 2],
             "decoder_hidden_size": 16},
    # (its depth and normal heads over one backbone)
    "tipsv2_dpt": {"backbone_config": {"model_type": "tipsv2_vision_model", "hidden_size": 32,
                                       "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 2,
                                       "image_size": 32, "patch_size": 8, "out_indices": [1, 2, 3, 4],
                                       "reshape_hidden_states": False},
                   "neck_hidden_sizes": [8, 16, 32, 32], "fusion_hidden_size": 16, "num_depth_bins": 16},
}
DEPTH_MODELS = ("depth_anything", "dpt", "glpn", "tipsv2_dpt")
# Object detectors' tiny configs (task object-detection): one encoder and two decoder layers of width 32 and ten
# object queries over a two-stage ResNet (transformers' own, not timm's); Deformable DETR reads both stages.
_BACKBONE = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
             "out_features": ["stage2"]}
_DETR = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
         "encoder_attention_heads": 2, "decoder_attention_heads": 2, "num_queries": 10, "backbone_config": _BACKBONE}
_RT_DETR = {"backbone_config": {"model_type": "rt_detr_resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 24, 32],
                                "depths": [1, 1, 1, 1], "out_features": ["stage2", "stage3", "stage4"]},
            "encoder_in_channels": [16, 24, 32], "encoder_hidden_dim": 32, "encoder_ffn_dim": 32,
            "encoder_attention_heads": 2, "d_model": 32, "decoder_in_channels": [32, 32, 32], "decoder_ffn_dim": 32,
            "decoder_layers": 2, "decoder_attention_heads": 2, "decoder_n_points": 2, "num_queries": 10}
DETECTION_SPECIFIC = {
    "detr": _DETR, "table-transformer": _DETR, "conditional_detr": _DETR, "dab-detr": {**_DETR, "hidden_size": 32},
    "deformable_detr": {**_DETR, "num_feature_levels": 2, "encoder_n_points": 2,
                        "decoder_n_points": 2, "backbone_config": {**_BACKBONE, "out_features": ["stage1", "stage2"]}},
    "yolos": {**VISION_TRANSFORMER, "image_size": [IMAGE_SIZE, IMAGE_SIZE], "num_detection_tokens": 10},
    # RT-DETR over a four-stage ResNet whose last three stages its hybrid encoder reads
    "rt_detr": _RT_DETR, "rt_detr_v2": _RT_DETR,
    # (their default HGNetV2 backbones and encoders, 30M parameters; ten queries)
    "d_fine": {"num_queries": 10}, "deimv2": {"num_queries": 10}, "rf_detr": {"num_queries": 10},
    "lw_detr": {"num_queries": 10},
}
DETECTORS = tuple(DETECTION_SPECIFIC)
# Video classifiers (task video-classification): clips of four 32x32 frames, tubelets of two frames where the
# architecture has them, 16x16 patches.
VIDEO_FRAMES = 4
TINY_VIDEO_TRANSFORMER = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
VIDEO_SPECIFIC = {
    "videomae": {**TINY_VIDEO_TRANSFORMER, "image_size": IMAGE_SIZE, "patch_size": 16, "num_frames": VIDEO_FRAMES,
                 "tubelet_size": 2, "num_hidden_layers": 2},
    "timesformer": {**TINY_VIDEO_TRANSFORMER, "image_size": IMAGE_SIZE, "patch_size": 16,
                    "num_frames": VIDEO_FRAMES, "num_hidden_layers": 2},
    "vivit": {**TINY_VIDEO_TRANSFORMER, "image_size": IMAGE_SIZE, "num_frames": VIDEO_FRAMES,
              "tubelet_size": [2, 16, 16], "num_hidden_layers": 2},
    "vjepa2": {"hidden_size": 32, "num_attention_heads": 2, "mlp_ratio": 2.0, "crop_size": IMAGE_SIZE,
               "patch_size": 16, "frames_per_clip": VIDEO_FRAMES, "tubelet_size": 2, "num_hidden_layers": 2,
               "num_pooler_layers": 1, "pred_hidden_size": 32, "pred_num_attention_heads": 2,
               "pred_num_hidden_layers": 1},
    "videoprism_vision_model": {**TINY_VIDEO_TRANSFORMER, "image_size": IMAGE_SIZE, "num_frames": VIDEO_FRAMES,
                                "num_spatial_layers": 2, "num_temporal_layers": 1, "num_auxiliary_layers": 1},
}
VIDEO_CLASSIFIERS = tuple(VIDEO_SPECIFIC)
# Image restorers (task image-to-image): Swin2SR at 2x, one block per stage, 4x4 windows.
RESTORERS = ("swin2sr",)
# Time-series heads (tasks time-series-classification, -regression, -forecasting): two layers over four 8-step
# patches of 32-step windows of 3 channels.
SERIES_MODELS = ("patchtst", "patchtsmixer")
SERIES_SIZES = {"context_length": 32, "num_input_channels": 3, "patch_length": 8, "patch_stride": 8, "d_model": 16,
                "num_targets": 3, "prediction_length": 8}
SERIES_SPECIFIC = {"patchtst": {"num_attention_heads": 2, "num_hidden_layers": 2, "ffn_dim": 32},
                   "patchtsmixer": {"num_layers": 2}}
# Image matting models (task image-matting): ViTMatte, a two-layer ViTDet over 16x16 patches of 32x32 images and
# their trimaps (padded to 32 already), a small detail-capture decoder.
MATTING_MODELS = ("vitmatte", "sapiens2")  # (Sapiens 2's reads the image alone)
NORMAL_ESTIMATORS = ("sapiens2", "tipsv2_dpt")  # (task normal-estimation)
POINTMAP_ESTIMATORS = ("sapiens2",)  # (task pointmap-estimation)
MATTING_BACKBONE = {"model_type": "vitdet", "num_channels": 4, "image_size": IMAGE_SIZE, "patch_size": 16,
                    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2,
                    "out_features": ["stage2"], "use_relative_position_embeddings": True}
# Open-vocabulary detectors (task zero-shot-object-detection): a tiny vision transformer and text tower, looking
# for ZERO_SHOT_LABELS.
ZERO_SHOT_DETECTORS = ("owlvit", "owlv2", "grounding-dino", "mm-grounding-dino")
GROUNDING_BACKBONE = {"model_type": "swin", "image_size": IMAGE_SIZE, "patch_size": 4, "embed_dim": 16,
                      "depths": [1, 1], "num_heads": [2, 2], "window_size": 4, "out_features": ["stage1", "stage2"]}
GROUNDING_SIZES = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "num_queries": 10, "encoder_ffn_dim": 32,
                   "decoder_ffn_dim": 32, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                   "num_feature_levels": 2, "max_text_len": 16, "use_timm_backbone": False}
# Top-down pose estimators (task pose-estimation): ViTPose over a two-layer ViT on 32x32 crops, five keypoints.
POSE_ESTIMATORS = ("vitpose", "sapiens2")
# Sapiens 2 (pose and matting heads): a two-layer ViT over 16x16 patches, a small upsampling head.
SAPIENS2 = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_attention_heads": 2, "num_key_value_heads_per_layer": [2, 2],
            "num_first_full_attention_layers": 1, "num_last_full_attention_layers": 1, "image_size": IMAGE_SIZE,
            "patch_size": 16, "num_register_tokens": 0, "out_features": ["stage2"], "out_indices": [2],
            "stage_names": ["stem", "stage1", "stage2"],
            "head_config": {"upsample_out_channels": [16, 16], "conv_out_channels": [16]}}
# Semantic segmentation models (task semantic-segmentation), swept when the task is asked for.
SEGMENTERS = ("segformer", "beit", "data2vec-vision", "dpt", "mobilevit", "mobilevitv2", "upernet", "mask2former",
              "maskformer", "eomt")
# Audio configs: a three-layer feature encoder (not two: as many as the transformer's layers would make a
# 'layers' student's layer list ambiguous, which real models' 7 and 12 are not) over 1600-sample waveforms, or
# AST's 64 frames x 32 mel bins and Whisper's 16 mel bins x 100 frames.
_WAVEFORM = {"conv_dim": (16, 16, 16), "conv_stride": (5, 2, 2), "conv_kernel": (10, 3, 3),
             "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2, "hidden_size": 32,
             "num_hidden_layers": 2,
             "num_attention_heads": 2, "intermediate_size": 64}
# A CTC recognizer's characters (wav2vec2-base-960h's vocab.json): the blank (its pad token) first, "|" between
# words; its tokenizer is transformers' Wav2Vec2CTCTokenizer.
CTC_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]
# (Parakeet's subsampling convolutions, initialised at std 0.02 over 8 channels, shrink the tiny model's
# activations 30-fold each, to 1e-5, below the int8 activation scale's floor: 0.2 keeps them at scale.)
PARAKEET_ENCODER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
                    "intermediate_size": 64, "num_mel_bins": 16, "subsampling_conv_channels": 8,
                    "conv_kernel_size": 7, "initializer_range": 0.2}
_SMALL_DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "num_key_value_heads": 2}
AUDIO_SPECIFIC = {
    **{model_type: _WAVEFORM for model_type in ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech")},
    "sew": {**_WAVEFORM, "squeeze_factor": 1},
    "unispeech-sat": _WAVEFORM,
    "wav2vec2-conformer": {**_WAVEFORM, "conv_depthwise_kernel_size": 7},
    "sew-d": {**_WAVEFORM, "squeeze_factor": 1, "position_buckets": 16, "max_relative_positions": 32},
    "audio-spectrogram-transformer": {"max_length": 64, "num_mel_bins": 32, "patch_size": 16, "hidden_size": 32,
                                      "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "whisper": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
                "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "num_mel_bins": 16,
                "max_source_positions": 50},
    "speech_to_text": {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
                       "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "conv_channels": 32,
                       "input_feat_per_channel": 16, "max_source_positions": 128, "max_target_positions": 128},
    "moonshine": {"hidden_size": 32, "intermediate_size": 64, "encoder_num_hidden_layers": 2,
                  "decoder_num_hidden_layers": 2, "encoder_num_attention_heads": 2, "decoder_num_attention_heads": 2,
                  "encoder_num_key_value_heads": 2, "decoder_num_key_value_heads": 2},
    "speecht5": {**_WAVEFORM, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
                 "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                 "encoder_max_relative_position": 16},
    "wav2vec2-bert": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                      "output_hidden_size": 32, "conv_depthwise_kernel_size": 7},
    **{model_type: {"encoder_config": PARAKEET_ENCODER} for model_type in ("parakeet_ctc", "lasr_ctc")},
    # encoder-decoders with a Parakeet encoder: Canary's decoder in its own sub-config, Cohere ASR's in the config
    "canary": {"encoder_config": PARAKEET_ENCODER, "decoder_config": {**_SMALL_DECODER, "head_dim": 16}},
    "cohere_asr": {"encoder_config": PARAKEET_ENCODER, **_SMALL_DECODER, "head_dim": 16},
    "granite_speech5_ctc": {"encoder_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                               "num_key_value_heads": 2, "intermediate_size": 64, "head_dim": 16,
                                               "num_mel_bins": 16, "context_size": 16, "conv_kernel_size": 7,
                                               "vocab_size": len(CTC_VOCAB)}},
    "omniasr_ctc": {"audio_config": _WAVEFORM, "blank_token_id": 0, "pad_token_id": 1},
}
AUDIO_INPUT_SHAPES = {"audio-spectrogram-transformer": (64, 32), "whisper": (16, 100),  # else a waveform
                      "wav2vec2-bert": (40, 160), "parakeet_ctc": (64, 16), "lasr_ctc": (64, 16),
                      "granite_speech5_ctc": (64, 64), "speech_to_text": (64, 16), "canary": (64, 16),
                      "cohere_asr": (64, 16),
                      "moonshine": (16000,)}  # Moonshine's first convolution strides 64 samples
WAVEFORM_SAMPLES = 1600
# What Wav2Vec2FeatureExtractor writes: each waveform normalized.
AUDIO_EXTRACTOR = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": True,
                   "sampling_rate": 16000, "feature_size": 1, "padding_value": 0.0}
# What ViTImageProcessor writes (less its resize settings, which are not read): uint8 pixels to [-1, 1].
IMAGE_PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_rescale": True, "rescale_factor": 1 / 255,
                   "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


MATTING_PROCESSOR = {**IMAGE_PROCESSOR, "image_processor_type": "VitMatteImageProcessor", "do_pad": True,
                     "size_divisibility": 32}


SPECIAL_TOKENS = ["[UNK]", "[PAD]", "[EOS]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-5


def save_tokenizer(folder: Path, byte_level: bool = False, punctuation: bool = False) -> None:
    """A word-level tokenizer of WORDS (or a byte-level BPE one, what GPT-2-style classes such as Qwen2Tokenizer
    read; with `punctuation`, full stops split from words as BERT's are, which Grounding DINO's label text needs),
    saved as transformers writes one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if byte_level:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tokenizer.pre_tokenizer = (pre_tokenizers.BertPreTokenizer() if punctuation
                                   else pre_tokenizers.WhitespaceSplit())
        trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator([" ".join(WORDS) + (" ." if punctuation else "")] * 4, trainer)
    names = ("unk_token", "pad_token", "eos_token", "cls_token", "sep_token", "mask_token")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **dict(zip(names, SPECIAL_TOKENS))).save_pretrained(folder)


def save_readable_tokenizer(folder: Path) -> None:
    """The word-level tokenizer, or the byte-level one where transformers loads this model_type's folders with a
    tokenizer class of its own that reads no words from a word-level tokenizer.json (Qwen2)."""
    from transformers import AutoTokenizer

    save_tokenizer(folder)
    if not AutoTokenizer.from_pretrained(folder)("the cat")["input_ids"]:
        save_tokenizer(folder, byte_level=True)


def save_ctc_tokenizer(folder: Path) -> None:
    """CTC_VOCAB as Wav2Vec2CTCTokenizer saves it: vocab.json and tokenizer_config.json."""
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(CTC_VOCAB)}))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Wav2Vec2CTCTokenizer", "pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>",
        "eos_token": "</s>", "word_delimiter_token": "|", "do_lower_case": False}))


def shrunk_sizes(model_type: str) -> dict:
    """SHRUNK_WHERE_PRESENT's sizes for the fields `model_type`'s default config has."""
    from transformers import AutoConfig

    defaults = AutoConfig.for_model(model_type).to_dict()
    shrunk = {name: value for name, value in SHRUNK_WHERE_PRESENT.items() if name in defaults}
    if "qk_rope_head_dim" not in defaults:
        return shrunk
    # Multi-head latent attention: keys and values have a head per query head, and where the default head_dim is
    # the rotary part (or the whole query head) the rotary embedding is sized by it, so it stays that part.
    shrunk["num_key_value_heads"] = HEADS
    rope, nope = defaults["qk_rope_head_dim"], defaults.get("qk_nope_head_dim", 0)
    if defaults.get("head_dim") == rope:
        shrunk["head_dim"] = shrunk["qk_rope_head_dim"]
    elif defaults.get("head_dim") == rope + nope:
        shrunk["head_dim"] = shrunk["qk_rope_head_dim"] + shrunk.get("qk_nope_head_dim", 0)
    return shrunk


def tiny_model(model_type: str, task: str, seed: int = 0):
    from transformers import AutoConfig

    from compression.hf_program import auto_class

    if task in ("audio-classification", "audio-feature-extraction", AUDIO_XVECTOR, AUDIO_FRAMES):
        # (an x-vector head's TDNN layers and embedding shrunk to the tiny model's width)
        xvector = {"tdnn_dim": [32, 32, 64], "tdnn_kernel": [5, 3, 1], "tdnn_dilation": [1, 2, 1],
                   "xvector_output_dim": 32} if task == AUDIO_XVECTOR else {}
        config = AutoConfig.for_model(model_type, num_labels=3, **AUDIO_SPECIFIC.get(model_type, {}), **xvector)
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == "speech-seq2seq":  # the vocabulary and special tokens of the family's default config
        config = AutoConfig.for_model(model_type, **AUDIO_SPECIFIC.get(model_type, {}))
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == "speech-recognition":
        config = AutoConfig.for_model(model_type, **{"vocab_size": len(CTC_VOCAB), "pad_token_id": 0,
                                                     **AUDIO_SPECIFIC.get(model_type, {})})
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == VIDEO_CLASSIFICATION:
        config = AutoConfig.for_model(model_type, num_labels=3, **VIDEO_SPECIFIC.get(model_type, {}))
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task in ("image-feature-extraction", ZERO_SHOT_IMAGES) and image_text_encoder(model_type):
        # CLIP's kin: two tiny towers
        config = AutoConfig.for_model(model_type, **IMAGE_TEXT_SPECIFIC.get(model_type, {
            "vision_config": VISION_TRANSFORMER, "text_config": TEXT_TOWER}))
        torch.manual_seed(seed)
        return settle_batch_norms(auto_class(task).from_config(config)).eval()
    if model_type == "sapiens2":  # its pose head's five keypoints, matting head's alpha and foreground, normals
        scale = {"scale_conv_out_channels": [8], "scale_final_hidden_sizes": [8, 8]}  # a pointmap's scale branch
        head = {**SAPIENS2["head_config"], **(scale if task == POINTMAP_ESTIMATION else {})}
        # (the scale branch's instance norms need 2x2 or more after its stride-2 convolution: patches of 8)
        patches = {"patch_size": 8} if task == POINTMAP_ESTIMATION else {}
        config = AutoConfig.for_model(model_type, **{**SAPIENS2, "head_config": head, **patches}, num_labels={
            POSE_ESTIMATION: 5, IMAGE_MATTING: 4, NORMAL_ESTIMATION: 3, POINTMAP_ESTIMATION: 3}[task])
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == IMAGE_MATTING:
        config = AutoConfig.for_model(model_type, backbone_config=MATTING_BACKBONE, hidden_size=32,
                                      convstream_hidden_sizes=[8, 16, 32], fusion_hidden_sizes=[32, 16, 8, 8])
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if model_type in GROUNDED_DETECTORS:  # a two-stage Swin, a two-layer BERT, ten object queries
        config = AutoConfig.for_model(model_type, backbone_config=GROUNDING_BACKBONE,
                                      text_config={"model_type": "bert", **TEXT_TOWER}, **GROUNDING_SIZES)
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == ZERO_SHOT_DETECTION:  # (each patch's box near the patch, as a trained detector's: see owl_folder)
        config = AutoConfig.for_model(model_type, vision_config=VISION_TRANSFORMER, text_config=TEXT_TOWER,
                                      projection_dim=VISION_TRANSFORMER["hidden_size"])
        torch.manual_seed(seed)
        model = auto_class(task).from_config(config).eval()
        with torch.no_grad():
            model.box_head.dense2.weight.mul_(0.01)
            model.box_head.dense2.bias.mul_(0.01)
        return model
    if task in TIME_SERIES_TASKS:
        config = AutoConfig.for_model(model_type, **SERIES_SIZES, **SERIES_SPECIFIC[model_type])
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == POSE_ESTIMATION:
        backbone = {"model_type": "vitpose_backbone", "image_size": [IMAGE_SIZE, IMAGE_SIZE], "patch_size": [8, 8],
                    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_ratio": 2}
        config = AutoConfig.for_model(model_type, backbone_config=backbone, num_labels=5)
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task == IMAGE_TO_IMAGE:
        config = AutoConfig.for_model(model_type, image_size=16, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                      window_size=4, upscale=2)
        torch.manual_seed(seed)
        return auto_class(task).from_config(config).eval()
    if task in ("image-classification", "semantic-segmentation", "depth-estimation", NORMAL_ESTIMATION,
                "object-detection", "image-feature-extraction"):
        # a dense head's (segmentation, depth, normals) or a detector's needs on top of the classifier's tiny config
        dense = {**SEGMENTATION_SPECIFIC.get(model_type, {}), **DEPTH_SPECIFIC.get(model_type, {})} if task in (
            "semantic-segmentation", "depth-estimation", NORMAL_ESTIMATION) else DETECTION_SPECIFIC.get(model_type, {})
        config = AutoConfig.for_model(model_type, num_labels=3, **{**IMAGE_SPECIFIC.get(model_type, {}), **dense})
        # Where the mapping holds several classes (DeiT, LeViT: the plain head and the one "WithTeacher"),
        # from_config iterates config.architectures, None in a fresh config; empty, it takes the first class.
        config.architectures = config.architectures or []
        torch.manual_seed(seed)
        model = settle_batch_norms(auto_class(task).from_config(config)).eval()
        return spread_class_scores(model) if task == "object-detection" else model
    shrunk = shrunk_sizes(model_type) if model_type in LATER_DECODERS else {}
    settings = {**COMMON, **shrunk, **SPECIFIC.get(model_type, {})}
    for name in UNSETTABLE.get(model_type, ()):
        settings.pop(name)
    config = AutoConfig.for_model(model_type, **settings)
    config.architectures = config.architectures or []  # Funnel's mapping holds two classes: see above
    if KEY_VALUE_HEADS and getattr(config, "num_key_value_heads", None):
        config.num_key_value_heads = KEY_VALUE_HEADS
    if task in ("sequence-classification", "token-classification"):
        config.num_labels = 3
    torch.manual_seed(seed)
    return auto_class(task).from_config(config).eval()


def spread_class_scores(model, scale: float = 30.0):
    """The detector with its class heads' weights (every linear layer with the config's classes as outputs, or
    one more) scaled: a random detector scores every class of every query near the same value (1/(C+1), or 0.5),
    where any change of a quantizer reorders its detections, and none of a trained one's confident detections."""
    classes = model.config.num_labels
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features in (classes, classes + 1):
                module.weight.mul_(scale)
    return model


def settle_batch_norms(model, batches: int = 4):
    """The model with each BatchNorm at weight 1, bias 0 and running statistics measured on random images in
    [-1, 1], as training leaves them. Left as transformers initialises them (running variance 1, and for some
    families weights ~0.02), the tiny MobileNetV2, EfficientNet, MobileViT and LeViT shrink every activation layer
    by layer to logits of 0 (or 1e-30), which no method's fidelity can be judged against."""
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_parameters()
        norm.momentum = None  # a cumulative average over the batches
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            # (a dual encoder's image side alone: ALIGN's EfficientNet)
            image_side = getattr(model, "get_image_features", model)
            image_side(pixel_values=torch.rand(16, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model


def folder_zip(model_type: str, task: str, directory: Path, dtype: str = "float32") -> Path:
    folder = directory / f"{model_type}-{task}"
    # config.json first: it picks the tokenizer class
    tiny_model(model_type, task).to(getattr(torch, dtype)).save_pretrained(folder)
    if task in ARRAY_TASKS and task not in TIME_SERIES_TASKS:  # the processor's settings
        processor = (MATTING_PROCESSOR if model_type == "vitmatte" else IMAGE_PROCESSOR if task in IMAGE_TASKS
                     else AUDIO_EXTRACTOR)
        (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
        if task == "speech-recognition":
            save_ctc_tokenizer(folder)
        if model_type in GROUNDED_DETECTORS:  # the labels' text, "cat. dog. bird."
            save_tokenizer(folder, punctuation=True)
        elif task in (ZERO_SHOT_IMAGES, ZERO_SHOT_DETECTION):  # the text tower reads the candidate labels
            save_readable_tokenizer(folder)
    else:
        save_readable_tokenizer(folder)
    return zip_folder(folder, directory / f"{model_type}-{task}.zip")


def zip_folder(folder: Path, archive: Path) -> Path:
    """The folder's files at the top of a zip, as a Hugging Face folder is uploaded."""
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.iterdir()):
            out.write(path, path.name)
    return archive


def text_dataset(directory: Path, labels: bool = False, tags: bool = False, pairs: bool = False,
                 choices: bool = False) -> Path:
    """Rows of WORDS: with `labels` a class per row (a sequence classifier's), with `tags` a class per word (a
    token classifier's), with `pairs` a question, a context and the answer in it (a reader's), with `choices` four
    endings of two to five words and the right one's index (a multiple-choice model's)."""
    generator = torch.Generator().manual_seed(0)
    lines = []
    for split, rows in (("train", 48), ("val", 16)):
        for row in range(rows):
            count = int(torch.randint(4, 12, (1,), generator=generator))
            text = " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (count,), generator=generator))
            line = {"split": split, "text": text}
            if pairs:  # the context's second word is the answer
                answer = text.split()[1]
                line = {"split": split, "text": "where is the cat", "text_pair": text,
                        "answer": {"text": answer, "start": text.index(f" {answer}") + 1}}
            if choices:
                line |= {"choices": [" ".join(WORDS[int(i)] for i in torch.randint(
                    0, len(WORDS), (int(torch.randint(2, 6, (1,), generator=generator)),), generator=generator))
                    for _ in range(4)], "label": row % 4}
            elif labels:
                line["label"] = row % 3
            elif tags:
                line["tags"] = [(row + word) % 3 for word in range(count)]
            lines.append(json.dumps(line))
    path = directory / ("choices.jsonl" if choices else "labelled.jsonl" if labels else "tagged.jsonl" if tags
                        else "pairs.jsonl" if pairs else "text.jsonl")
    path.write_text("\n".join(lines) + "\n")
    return path


def video_npz(directory: Path) -> Path:
    """Random uint8 RGB clips [N, VIDEO_FRAMES, 32, 32, 3] (frames channels-last, as video decoders give them), 48
    train and 16 val rows, each labelled 0..2."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, rows in (("train", 48), ("val", 16)):
        arrays[f"{split}.x"] = rng.integers(0, 256, (rows, VIDEO_FRAMES, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        arrays[f"{split}.y"] = rng.integers(0, 3, rows)
    path = directory / "clips.npz"
    np.savez(path, **arrays)
    return path


def series_npz(directory: Path, task: str) -> Path:
    """Random-walk windows [16, 32, 3] per split; a classifier's classes or a regression head's three values as
    labels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val"):
        arrays[f"{split}.x"] = rng.standard_normal((16, SERIES_SIZES["context_length"], 3)).cumsum(1).astype(
            np.float32)
        if task == TS_CLASSIFICATION:
            arrays[f"{split}.y"] = np.arange(16) % 3
        elif task == TS_REGRESSION:
            arrays[f"{split}.y"] = rng.standard_normal((16, 3)).astype(np.float32)
    path = directory / "series.npz"
    np.savez(path, **arrays)
    return path


def image_npz(directory: Path, labels: bool = True, trimaps: bool = False) -> Path:
    """Random uint8 RGB images [N, 32, 32, 3] (channels-last, as image libraries give them), 48 train and 16 val
    rows, each with a label in 0..2 (`<split>.y`) when `labels`; with `trimaps`, a random trimap (0, 128 or 255) as
    a fourth channel (an image matting model's input)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, rows in (("train", 48), ("val", 16)):
        arrays[f"{split}.x"] = rng.integers(0, 256, (rows, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        if trimaps:
            trimap = rng.choice(np.array([0, 128, 255], np.uint8), (rows, IMAGE_SIZE, IMAGE_SIZE, 1))
            arrays[f"{split}.x"] = np.concatenate([arrays[f"{split}.x"], trimap], -1)
        if labels:
            arrays[f"{split}.y"] = rng.integers(0, 3, rows)
    path = directory / "images.npz"
    np.savez(path, **arrays)
    return path


def audio_npz(directory: Path, model_type: str, labels: bool = True) -> Path:
    """Random float waveforms [N, 1600] (or a spectrogram model's features), 48 train and 16 val rows, each with a
    label in 0..2 (`<split>.y`) when `labels`."""
    rng = np.random.default_rng(0)
    shape = AUDIO_INPUT_SHAPES.get(model_type, (WAVEFORM_SAMPLES,))
    arrays = {}
    for split, rows in (("train", 48), ("val", 16)):
        arrays[f"{split}.x"] = rng.normal(size=(rows, *shape)).astype(np.float32)
        if labels:
            arrays[f"{split}.y"] = rng.integers(0, 3, rows)
    path = directory / "audio.npz"
    np.savez(path, **arrays)
    return path


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def folder_outcome(task: str, result) -> str:
    stage = result.stages[-1]
    perplexity = f"ppl {stage.metrics['perplexity']:.1f} vs {result.baseline['perplexity']:.1f}; " \
        if task in ("causal-lm", *SEQ2SEQ_TASKS) else ""
    if task in SEQ2SEQ_TASKS:  # the share of the upload's own output tokens the stage's model predicts
        perplexity += f"{100 * stage.metrics['accuracy']:.0f}% of the upload's tokens; "
    if "hf_folder" not in stage.metrics and task == "causal-lm":  # llm_ptq: its folder is the stage's model
        return perplexity.removesuffix("; ")
    folder = stage.metrics.get("hf_folder") or {}
    if own := folder.get("measured_as_its_own_model"):  # the stage's model with some quantizers in float
        in_float = len(folder["float_activations"]) + len(folder["float_input_layers"])
        return (f"{perplexity}loads as its own model ({in_float} activation quantizers in float): "
                f"{own['metric_points']:.1f} {own['metric']} points vs the stage's {own['stage_metric_points']:.1f}")
    if folder.get("written"):
        return f"{perplexity}loads, rel diff {folder['relative_difference_to_stage_model']:.1e}"
    return f"{perplexity}no folder: {str(folder.get('reason', '?')).splitlines()[0][:160]}"


def stage_effect(result) -> str:
    """What the stage did, so that a stage that ran but changed little shows (Falcon's int8 once quantized its
    output layer alone and said "ok"): x smaller than the upload, int8 PTQ's (iPQ's) quantized layer count, and the
    stage's warnings."""
    metrics = result.stages[-1].metrics
    effect = f"{metrics.get('compression_ratio', 0):.2f}x"
    layers = (metrics.get("method_metrics") or {}).get("quantized_layers")
    if isinstance(layers, dict):  # iPQ: its k-means report per layer
        effect += f", {len(layers)} layers quantized"
    elif isinstance(layers, int):
        effect += f", {layers} layers int8"
    heads = [group for group in (metrics.get("method_metrics") or {}).get("groups", [])
             if isinstance(group, dict) and group.get("unit") == "heads"]  # (iPQ's groups are its stages)
    if heads:  # structured pruning's attention groups: how many lost heads (a unit: a key/value head's group)
        effect += f", heads pruned in {len(heads)} attentions ({heads[0]['kept']}/{heads[0]['channels']} kept)"
    if transcripts := metrics.get("transcripts"):  # a CTC recognizer's: how far its greedy transcripts moved
        effect += f", token error rate {transcripts['token_error_rate']:.1f}% vs the upload's transcripts"
    # A stage's own warnings (most weights left float, quality collapsed) show beside what it did.
    return effect + "".join(f"; WARNING {warning[:120]}" for warning in metrics.get("warnings", []))


def run_case(model_type: str, task: str, method: str, spec, directory: Path, dtype: str = "float32") -> dict:
    row = {"model_type": model_type, "task": task, "method": method}
    started = time.monotonic()
    try:
        archive = folder_zip(model_type, task, directory, dtype)
        read_hf_folder(archive, task=task)
        dataset = series_npz(directory, task) if task in TIME_SERIES_TASKS else video_npz(
            directory) if task == VIDEO_CLASSIFICATION else image_npz(
            directory, labels=task in ("image-classification", ZERO_SHOT_IMAGES), trimaps=model_type == "vitmatte"
        ) if task in IMAGE_TASKS else audio_npz(
            directory, model_type, labels=task == "audio-classification") if task in AUDIO_TASKS else text_dataset(
            directory, labels=task == "sequence-classification", tags=task == "token-classification",
            pairs=task == "question-answering", choices=task == MULTIPLE_CHOICE)
        queries = ZERO_SHOT_LABELS if task in (ZERO_SHOT_IMAGES, ZERO_SHOT_DETECTION) else {}
        result = run_folder_pipeline(archive, dataset, task, [spec], EvaluationSpec(latency=False, **queries),
                                     RunContext(), directory / f"{model_type}-{task}-{method}")
        row |= {"ok": True, "folder": folder_outcome(task, result), "effect": stage_effect(result)}
    except Exception as exc:  # noqa: BLE001 - the sweep reports every failure and goes on
        row |= {"ok": False, "error": first_line(exc), "where": traceback.format_exc().splitlines()[-3].strip()}
    row["seconds"] = round(time.monotonic() - started, 1)
    return row


# The task each list's model types are swept for: an image or audio model's one task, and the text models' heads.
ARRAY_FAMILIES = (("image-classification", IMAGE_CLASSIFIERS), (VIDEO_CLASSIFICATION, VIDEO_CLASSIFIERS),
                  ("semantic-segmentation", SEGMENTERS), (IMAGE_TO_IMAGE, RESTORERS),
                  (POSE_ESTIMATION, POSE_ESTIMATORS), (TS_FORECASTING, SERIES_MODELS),
                  (ZERO_SHOT_DETECTION, ZERO_SHOT_DETECTORS), (IMAGE_MATTING, MATTING_MODELS),
                  (NORMAL_ESTIMATION, NORMAL_ESTIMATORS),
                  ("depth-estimation", DEPTH_MODELS), ("object-detection", DETECTORS),
                  ("audio-classification", AUDIO_CLASSIFIERS),
                  ("speech-recognition", SPEECH_RECOGNIZERS), ("speech-seq2seq", SPEECH_SEQ2SEQS))
HEAD_FAMILIES = (("sequence-classification", CLASSIFIERS), ("token-classification", TAGGERS),
                 ("question-answering", READERS), (MULTIPLE_CHOICE, CHOOSERS), ("causal-lm", DECODERS),
                 ("seq2seq-lm", SEQ2SEQ_LMS))


def cases(types: list[str] | None, methods: list[str] | None, only_tasks: list[str] | None = None):
    shipped = model_types_by_task()
    # Image and audio classifiers only when asked for (the default run sweeps the text models).
    images = IMAGE_CLASSIFIERS if set(only_tasks or ()) & set(IMAGE_TASKS) else ()
    images += SEGMENTERS if "semantic-segmentation" in (only_tasks or ()) else ()
    images += DEPTH_MODELS if "depth-estimation" in (only_tasks or ()) else ()
    images += DETECTORS if "object-detection" in (only_tasks or ()) else ()
    images += VIDEO_CLASSIFIERS if VIDEO_CLASSIFICATION in (only_tasks or ()) else ()
    images += RESTORERS if IMAGE_TO_IMAGE in (only_tasks or ()) else ()
    images += POSE_ESTIMATORS if POSE_ESTIMATION in (only_tasks or ()) else ()
    images += SERIES_MODELS if set(TIME_SERIES_TASKS) & set(only_tasks or ()) else ()
    images += ZERO_SHOT_DETECTORS if ZERO_SHOT_DETECTION in (only_tasks or ()) else ()
    images += MATTING_MODELS if IMAGE_MATTING in (only_tasks or ()) else ()
    images += NORMAL_ESTIMATORS if NORMAL_ESTIMATION in (only_tasks or ()) else ()
    images += POINTMAP_ESTIMATORS if POINTMAP_ESTIMATION in (only_tasks or ()) else ()
    images += DUAL_ENCODERS if {"image-feature-extraction", ZERO_SHOT_IMAGES} & set(only_tasks or ()) else ()
    sounds = AUDIO_CLASSIFIERS if set(only_tasks or ()) & {"audio-classification", "audio-feature-extraction"} else ()
    sounds += SPEAKER_MODELS if set(only_tasks or ()) & {AUDIO_XVECTOR, AUDIO_FRAMES} else ()
    speech = SPEECH_RECOGNIZERS if only_tasks and "speech-recognition" in only_tasks else ()
    speech += SEQ2SEQ_LMS if only_tasks and "seq2seq-lm" in only_tasks else ()
    speech += SPEECH_SEQ2SEQS if only_tasks and "speech-seq2seq" in only_tasks else ()
    for model_type in types or list(dict.fromkeys(ENCODERS + DECODERS + images + sounds + speech)):
        # An image or audio model's task, else an encoder's features; then every head its lists give it.
        tasks = [next((task for task, listed in ARRAY_FAMILIES if model_type in listed), None)]
        if tasks[0] is None:
            tasks = ["feature-extraction"] if model_type in ENCODERS or model_type not in DECODERS else []
        tasks += [task for task, listed in HEAD_FAMILIES if model_type in listed]
        # A task named on the command line is swept for every listed type that ships a head for it.
        tasks += [task for task in only_tasks or () if task not in tasks and model_type in shipped.get(task, ())]
        for task in tasks:
            if only_tasks and task not in only_tasks:
                continue
            if model_type not in shipped[task]:
                yield {"model_type": model_type, "task": task, "method": "-", "ok": None,
                       "error": "not shipped by the installed transformers", "seconds": 0}
                continue
            # A causal LM takes llm_ptq and, on its exported program, every other method; image and audio
            # classifiers take the encoders' methods.
            table = LLM_METHODS | ENCODER_METHODS if task == "causal-lm" else ENCODER_METHODS
            for method, spec in table.items():
                if not methods or method in methods:
                    yield model_type, task, method, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", help="comma-separated model_types (default: the whole list)")
    parser.add_argument("--methods", help=f"comma-separated of {list(ENCODER_METHODS) + list(LLM_METHODS)}")
    parser.add_argument("--tasks", help="comma-separated tasks (default: every task of each model_type)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="the dtype the folders' weights are saved in (most Hub checkpoints: bfloat16)")
    parser.add_argument("--kv-heads", type=int, help="give every config with num_key_value_heads this many (1: "
                        "multi-query attention, as Gemma-2B's)")
    args = parser.parse_args()
    global KEY_VALUE_HEADS
    KEY_VALUE_HEADS = args.kv_heads
    types = args.types.split(",") if args.types else None
    methods = args.methods.split(",") if args.methods else None
    rows = []
    print(f"weights saved as {args.dtype}; load average at start: {os.getloadavg()[0]:.2f}\n")
    print("| model_type | task | method | result | s | x smaller | HF folder |\n|---|---|---|---|---|---|---|",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for index, case in enumerate(cases(types, methods, args.tasks.split(",") if args.tasks else None)):
            row = case if isinstance(case, dict) else run_case(*case, Path(tmp) / str(index), args.dtype)
            rows.append(row)
            result = "ok" if row["ok"] else ("skipped" if row["ok"] is None else f"ERROR {row['error']}")
            print(f"| {row['model_type']} | {row['task']} | {row['method']} | {result} | {row['seconds']} | "
                  f"{row.get('effect', '')} | {row.get('folder', '')} |", flush=True)
    failed = sum(row["ok"] is False for row in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} ok; load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
