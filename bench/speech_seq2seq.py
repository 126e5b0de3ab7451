"""A Whisper-tiny-sized encoder-decoder through the service's speech-seq2seq path: how long the job takes (the upload
writing its transcripts included), how much smaller the int8 program and its Hugging Face folder are, and how much
faster the int8 teacher-forced forward runs than the float one (compiled, batch 1 and 8).

The weights are random (`WhisperConfig` at openai/whisper-tiny's sizes: 80 mel bins x 3000 frames, 4 + 4 layers of
width 384, 51,865 tokens, 38M parameters; its generation settings' token ids): no pretrained speech model ships
inside a package this machine can install, so the figures are sizes and speeds, not a trained model's fidelity.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.speech_seq2seq
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.seq2seq_lm import print_int8_figures
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import zip_bytes

# openai/whisper-tiny's special tokens (generation_config.json), a few of its languages
END, START, NO_TIMESTAMPS = 50257, 50258, 50363
LANGUAGES = {"<|en|>": 50259, "<|de|>": 50261, "<|fr|>": 50265}
TASKS = {"translate": 50358, "transcribe": 50359}
EXAMPLES = 16  # per split


def whisper_tiny_folder(folder: Path) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.WhisperConfig(vocab_size=51865, d_model=384, encoder_layers=4, decoder_layers=4,
                                        encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536,
                                        decoder_ffn_dim=1536, num_mel_bins=80, max_source_positions=1500,
                                        max_target_positions=448, pad_token_id=END, eos_token_id=END,
                                        bos_token_id=END, decoder_start_token_id=START)
    model = transformers.WhisperForConditionalGeneration(config)
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=START, eos_token_id=END, pad_token_id=END, bos_token_id=END, max_length=448,
        is_multilingual=True, lang_to_id=LANGUAGES, task_to_id=TASKS, no_timestamps_token_id=NO_TIMESTAMPS,
        begin_suppress_tokens=[220, END], suppress_tokens=[])
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80, "sampling_rate": 16000,
        "hop_length": 160, "chunk_length": 30, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000}))
    return folder


def main() -> None:
    root = Path(tempfile.mkdtemp())
    (root / "whisper.zip").write_bytes(zip_bytes(whisper_tiny_folder(root / "whisper")))
    # log-mel-like features in the extractor's range (its log10 mel spectrogram, clipped and scaled to about -1..1)
    features = np.random.default_rng(0).uniform(-1.0, 1.0, (2 * EXAMPLES, 80, 3000)).astype(np.float32)
    np.savez(root / "speech.npz", **{"train.input_features": features[:EXAMPLES],
                                     "val.input_features": features[EXAMPLES:]})
    started = time.monotonic()
    result = run_folder_pipeline(root / "whisper.zip", root / "speech.npz", None,
                                 [PTQSpec(calibration_samples=EXAMPLES)],
                                 EvaluationSpec(latency_batch_sizes=[1, 8]), RunContext(), root / "work")
    with np.load(root / "work" / "speech.npz") as arrays:
        output_tokens = arrays["val.y"].shape[1]
    print(f"job: {time.monotonic() - started:.0f} s ({output_tokens} output positions)")
    print_int8_figures(result)


if __name__ == "__main__":
    main()
