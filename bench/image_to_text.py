"""Image-to-text encoder-decoders (VisionEncoderDecoderModel) through the worker's folder path.

Default: two models at their Hub shapes, randomly initialised (nothing may be downloaded here; size and speed do
not depend on the weights, the share of the upload's tokens does, so it is printed but means less than on trained
weights):
- `trocr-small`: as microsoft/trocr-small-printed (a DeiT-small encoder of 384x384 images in 16x16 patches, a
  6-layer TrOCR decoder of width 256 over 64,044 tokens);
- `vit-gpt2`: as nlpconnect/vit-gpt2-image-captioning (a ViT-base encoder of 224x224 images, GPT-2 small with
  cross-attention as the decoder).
The images are synthetic (smooth random colour fields, uint8, scaled by a ViT processor), 32 to calibrate and 16 to
evaluate, without reference texts: each is labelled with what the upload writes (greedy, at most 64 tokens), and a
stage's accuracy is the share of those tokens it predicts. Printed per model and stage: seconds, bytes against the
upload's program, accuracy, the latency at batch 1 and 8 of fp32 and of the stage's model as the job measures them
(the forward generation repeats: the image and the whole output so far; both in one run: read their ratio), and
whether the stage's folder was written.

`--sweep` instead runs every method on tiny pairs of encoder and decoder (32x32 images, two layers of width 32)
and prints one row per case, as `bench.hf_architecture_sweep` does. Their weights are drawn at 0.3 (default
initialisation makes a tiny decoder write its start token again and again; at 0.5 weight-only int8's rounding
grew to a gap of 10.3 logits at the output, 77 % of the tokens kept, against 0.9 and 97 % at 0.3).

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.image_to_text [--models trocr-small,vit-gpt2] [--stages ptq,ptq_w8]
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.image_to_text --sweep [--methods ptq,ptq_w4]
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path

import torch

from bench.folder_stage import folder_status, print_stages, smooth_images, stage_parser
from bench.hf_architecture_sweep import ENCODER_METHODS, first_line, save_tokenizer, stage_effect, zip_folder
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec

PROCESSOR = {"image_processor_type": "ViTImageProcessor", "do_rescale": True, "rescale_factor": 1 / 255,
             "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
STAGES = {"ptq": PTQSpec(calibration_samples=32),
          "ptq_w8": PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False)}
SPECIAL = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 0}


def trocr_small():
    from transformers import DeiTConfig, TrOCRConfig

    encoder = DeiTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                         image_size=384, patch_size=16)
    decoder = TrOCRConfig(vocab_size=64044, d_model=256, decoder_layers=6, decoder_attention_heads=8,
                          decoder_ffn_dim=1024, max_position_embeddings=512, cross_attention_hidden_size=384,
                          layernorm_embedding=True, use_learned_position_embeddings=True, **SPECIAL)
    return encoder, decoder, 384


def vit_gpt2():
    from transformers import GPT2Config, ViTConfig

    return ViTConfig(), GPT2Config(add_cross_attention=True, is_decoder=True, bos_token_id=0, eos_token_id=2,
                                   pad_token_id=1), 224


MODELS = {"trocr-small": trocr_small, "vit-gpt2": vit_gpt2}


def tiny_pair(encoder: str, decoder: str):
    """A tiny encoder (32x32 images) and decoder (two layers of width 32) of the named model types."""
    from transformers import AutoConfig

    width = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    encoders = {"vit": {**width, "image_size": 32, "patch_size": 8}, "deit": {**width, "image_size": 32,
                                                                              "patch_size": 8},
                "beit": {**width, "image_size": 32, "patch_size": 8},
                "swin": {"image_size": 32, "patch_size": 2, "embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2],
                         "window_size": 4}}
    decoders = {"trocr": {"d_model": 32, "decoder_layers": 2, "decoder_attention_heads": 2, "decoder_ffn_dim": 64},
                "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2},
                "bert": width, "roberta": width,
                "bart": {"d_model": 32, "decoder_layers": 2, "encoder_layers": 2, "decoder_attention_heads": 2,
                         "encoder_attention_heads": 2, "decoder_ffn_dim": 64, "encoder_ffn_dim": 64},
                "mbart": {"d_model": 32, "decoder_layers": 2, "encoder_layers": 2, "decoder_attention_heads": 2,
                          "encoder_attention_heads": 2, "decoder_ffn_dim": 64, "encoder_ffn_dim": 64}}
    decoder_config = AutoConfig.for_model(decoder, vocab_size=320, max_position_embeddings=128, n_positions=128,
                                          is_decoder=True, add_cross_attention=True, **SPECIAL, **decoders[decoder])
    return AutoConfig.for_model(encoder, **encoders[encoder]), decoder_config, 32


def model_folder(name: str, configs, directory: Path, weight_scale: float | None = None) -> Path:
    """The pair as a zipped VisionEncoderDecoderModel folder with a tokenizer and the image processor; its weights
    drawn at `weight_scale` where given (a tiny random decoder otherwise writes its start token again and again)."""
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    encoder, decoder, _ = configs
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for key, value in SPECIAL.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = VisionEncoderDecoderModel(config).eval()
    if weight_scale is not None:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() > 1:
                    parameter.normal_(0.0, weight_scale)
    folder = directory / name
    model.save_pretrained(folder)
    save_tokenizer(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return zip_folder(folder, directory / f"{name}.zip")


PAIRS = [("vit", "trocr"), ("deit", "trocr"), ("vit", "gpt2"), ("beit", "bert"), ("vit", "roberta"),
         ("swin", "bart"), ("swin", "mbart")]


def sweep(directory: Path, methods: list[str] | None = None) -> None:
    dataset = smooth_images(directory, 32, train=24, val=8)
    print("| encoder | decoder | method | result | s | x smaller | HF folder |\n|---|---|---|---|---|---|---|")
    for encoder, decoder in PAIRS:
        for method, spec in ENCODER_METHODS.items():
            if methods and method not in methods:
                continue
            started, name = time.monotonic(), f"{encoder}-{decoder}-{method}"
            try:
                archive = model_folder(name, tiny_pair(encoder, decoder), directory, weight_scale=0.3)
                result = run_folder_pipeline(archive, dataset, None, [spec], EvaluationSpec(latency=False),
                                             RunContext(), directory / f"{name}-work")
                stage = result.stages[-1].metrics
                outcome = (f"ok, {100 * stage['accuracy']:.0f}% of the upload's tokens | "
                           f"{time.monotonic() - started:.1f} | {stage_effect(result)} | {folder_status(stage)}")
            except Exception as exc:  # noqa: BLE001 - the sweep reports every failure and goes on
                where = traceback.format_exc().splitlines()[-3].strip()
                outcome = f"ERROR {first_line(exc)} ({where[:80]}) | {time.monotonic() - started:.1f} | |"
            print(f"| {encoder} | {decoder} | {method} | {outcome} |", flush=True)


def main() -> None:
    parser = stage_parser(__doc__, list(STAGES))
    parser.add_argument("--models", default="trocr-small,vit-gpt2", help=f"comma-separated of {list(MODELS)}")
    parser.add_argument("--sweep", action="store_true", help="every method on tiny encoder-decoder pairs")
    parser.add_argument("--methods", help=f"with --sweep: comma-separated of {list(ENCODER_METHODS)}")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        if args.sweep:
            sweep(directory, args.methods.split(",") if args.methods else None)
            return
        for model in args.models.split(","):
            configs = MODELS[model]()
            archive = model_folder(model, configs, directory)
            dataset = smooth_images(directory, configs[2])
            print(f"{model}: upload {archive.stat().st_size / 2**20:.1f} MiB")
            print_stages(archive, dataset, STAGES, args.stages.split(","), not args.no_compile, directory / model,
                         lambda stage: f"{100 * stage['accuracy']:.1f}% of the upload's tokens")


if __name__ == "__main__":
    main()
