"""A base-sized CTC speech recognizer through the worker's folder path: what int8 PTQ does to its size and speed.

The model is Wav2Vec2ForCTC at wav2vec2-base's shape (94M parameters: a 7-layer convolutional feature encoder, 12
transformer layers of width 768, the 32 characters of wav2vec2-base-960h's vocabulary), randomly initialised:
nothing may be downloaded here, and size and speed do not depend on the weights (its transcripts' change does,
so it is printed but means little). The audio is synthetic: 1 s of 16 kHz waveforms (tones plus noise), 32 to
calibrate and 8 to evaluate. Printed per stage: seconds, bytes against the fp32 upload, the per-frame agreement,
the transcripts' token error rate against the original's, the latency at batch 1 and 8 of fp32 and of the stage's
model as the job measures them (both in one run, so their ratio is what to read on a shared machine), and whether
the stage's Hugging Face folder was written.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.speech_recognition [--stages ptq,ptq_w8] [--no-compile]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.folder_stage import folder_status, print_latencies, run_stage, save_train_val, stage_parser
from bench.hf_architecture_sweep import AUDIO_EXTRACTOR, save_ctc_tokenizer, zip_folder
from compression.specs import PTQSpec

SAMPLE_RATE = 16_000
STAGES = {"ptq": PTQSpec(calibration_samples=32),
          "ptq_w8": PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False)}


def base_folder(directory: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from bench.hf_architecture_sweep import CTC_VOCAB

    torch.manual_seed(0)
    folder = directory / "wav2vec2-base-ctc"
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(CTC_VOCAB), pad_token_id=0)).eval().save_pretrained(folder)
    save_ctc_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(AUDIO_EXTRACTOR))
    return zip_folder(folder, directory / "wav2vec2-base-ctc.zip")


def synthetic_speech(directory: Path, train: int = 32, val: int = 8) -> Path:
    """1 s waveforms: three tones of random pitch plus noise, as 16-bit PCM."""
    rng = np.random.default_rng(0)
    time_axis = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    pitches = rng.uniform(100, 2000, (train + val, 3, 1))
    waves = np.sin(2 * np.pi * pitches * time_axis).sum(axis=1) / 3 + rng.normal(0, 0.05, (train + val, SAMPLE_RATE))
    pcm = (waves * 0.5 * 32767).astype(np.int16)
    return save_train_val(directory / "speech.npz", pcm, train)


def main() -> None:
    args = stage_parser(__doc__, list(STAGES)).parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        archive, dataset = base_folder(directory), synthetic_speech(directory)
        print(f"upload: {archive.stat().st_size / 2**20:.1f} MiB")
        for name in args.stages.split(","):
            seconds, stage = run_stage(archive, dataset, STAGES[name], not args.no_compile, directory / name)
            print(f"{name}: {seconds:.0f} s, {stage['compression_ratio']:.2f}x smaller, "
                  f"top1_agreement {stage['top1_agreement']:.4f}, token error rate "
                  f"{stage['transcripts']['token_error_rate']:.1f}% vs the original's transcripts, "
                  f"{folder_status(stage)}")
            print_latencies(stage, name, "  ")


if __name__ == "__main__":
    main()
