"""Base-sized image feature extractors through the worker's folder path: what int8 PTQ does to their size and speed.

Two models at their Hub shapes, randomly initialised (nothing may be downloaded here; size and speed do not depend
on the weights, fidelity does, so it is printed but means less than on trained weights):
- `dinov2-small`: Dinov2Model as facebook/dinov2-small (22M parameters, 12 layers of width 384, 14x14 patches),
  read for `last_hidden_state` on 224x224 images;
- `clip-b32`: CLIPModel as openai/clip-vit-base-patch32 (151M parameters, of which the 88M vision tower and its
  projection are the image embedding's), read for `get_image_features`; its text tower stays in the folder as
  uploaded and out of the program.
The images are synthetic (smooth random colour fields, uint8 224x224, scaled by a DINOv2-style processor): 32 to
calibrate and 16 to evaluate. Printed per model and stage: seconds, bytes against the upload's program, cosine and
the rank agreement of the similarities against the fp32 features, the latency at batch 1 and 8 of fp32 and of the
stage's model as the job measures them (both in one run: read their ratio on a shared machine), and whether the
stage's Hugging Face folder was written.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.image_features [--models dinov2-small,clip-b32] [--stages ptq,ptq_w8]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from bench.folder_stage import print_stages, smooth_images, stage_parser
from bench.hf_architecture_sweep import zip_folder
from compression.specs import PTQSpec

SIZE = 224
# What BitImageProcessor writes for facebook/dinov2-small (CLIP's differs only in its mean and std).
PROCESSOR = {"image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256},
             "do_center_crop": True, "crop_size": {"height": SIZE, "width": SIZE}, "do_rescale": True,
             "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
             "image_std": [0.229, 0.224, 0.225]}
STAGES = {"ptq": PTQSpec(calibration_samples=32),
          "ptq_w8": PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False)}


def dinov2_small():
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14))


def clip_b32():
    from transformers import CLIPConfig, CLIPModel

    return CLIPModel(CLIPConfig())  # the defaults are ViT-B/32's


MODELS = {"dinov2-small": dinov2_small, "clip-b32": clip_b32}


def model_folder(name: str, directory: Path) -> Path:
    torch.manual_seed(0)
    folder = directory / name
    MODELS[name]().eval().save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return zip_folder(folder, directory / f"{name}.zip")


def main() -> None:
    parser = stage_parser(__doc__, list(STAGES))
    parser.add_argument("--models", default="dinov2-small,clip-b32", help=f"comma-separated of {list(MODELS)}")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        dataset = smooth_images(directory, SIZE)
        for model in args.models.split(","):
            archive = model_folder(model, directory)
            print(f"{model}: upload {archive.stat().st_size / 2**20:.1f} MiB")
            print_stages(archive, dataset, STAGES, args.stages.split(","), not args.no_compile, directory / model,
                         lambda stage: f"cosine {stage['cosine']:.4f}, "
                                       f"similarity_spearman {stage['similarity_spearman']:.4f}")


if __name__ == "__main__":
    main()
