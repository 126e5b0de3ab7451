"""A monocular depth model (`DepthAnythingForDepthEstimation`, DPT, GLPN, ZoeDepth, Depth Pro) uploaded as a
Hugging Face folder is read for its task from `architectures`: the program outputs the predicted depth map
[batch, height, width], the job compares each compressed map with the upload's (cosine of the whole map, SQNR), and
the compressed model comes back as a folder `from_pretrained` loads where compressed-tensors can hold it."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.formats import hf_folder
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec
from tests.hf_folders import depth_anything_folder, zip_bytes


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("depth")
    archive = directory / "depth.zip"
    archive.write_bytes(zip_bytes(depth_anything_folder(directory / "depth")))
    return archive


def _images(path, depths: bool = False):
    rng = np.random.default_rng(0)
    arrays = {f"{split}.x": rng.integers(0, 256, (8, 56, 56, 3), dtype=np.uint8) for split in ("train", "val")}
    if depths:
        arrays["val.y"] = rng.uniform(0.5, 10, (8, 56, 56)).astype(np.float32)
    np.savez(path, **arrays)
    return path


def test_the_task_is_read_from_the_head_and_the_output_is_a_depth_map(depth_model):
    folder = read_hf_folder(depth_model)
    assert folder.task == "depth-estimation"
    signature = folder.signature()
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 56, 56], "dtype": "float32"}]
    assert signature["outputs"] == [{"name": "predicted_depth", "shape": [None, None, None], "dtype": "float32"}]


def test_a_depth_job_compares_whole_maps_and_writes_a_folder(depth_model, tmp_path):
    from transformers import DepthAnythingForDepthEstimation

    result = run_folder_pipeline(depth_model, _images(tmp_path / "images.npz"), None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    baseline, stage = result.baseline, result.stages[0].metrics
    assert baseline["output_kind"] == "hidden_states" and baseline["metric"] == "cosine"
    assert stage["metric"] == "cosine" and 0.9 < stage["cosine"] <= 1 + 1e-6 and "sqnr_db" in stage
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        pixels = torch.from_numpy(arrays["val.x"][:2])
    upload = DepthAnythingForDepthEstimation.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        expected = upload(pixel_values=pixels).predicted_depth
        got = load_program(tmp_path / "work" / "model.pt2").module()(pixels)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # Its convolutions are quantized, which compressed-tensors cannot hold: the job says so, the .pt2 is the model.
    assert not stage["hf_folder"]["written"] and "nn.Linear layers only" in stage["hf_folder"]["reason"]
    # A pruned model keeps float convolutions: its folder loads as the upload's class.
    pruned = run_folder_pipeline(depth_model, tmp_path / "images.npz", None, [PruneSpec(sparsity=0.3)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "pruned")
    [artifact] = [artifact for artifact in pruned.stages[0].artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    assert type(hf_folder.load(artifact.path)).__name__ == "DepthAnythingForDepthEstimation"


def test_depth_labels_are_refused_with_what_the_job_measures(depth_model, tmp_path):
    with pytest.raises(InvalidUpload, match=r"a depth-estimation job compares .* remove \['val.y'\]"):
        run_folder_pipeline(depth_model, _images(tmp_path / "labelled.npz", depths=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")


def test_a_processor_keeping_the_aspect_ratio_runs_the_model_at_the_size_it_gives_the_images(tmp_path):
    # Depth Anything's processor scales an image as little as possible to reach one side of its size and rounds
    # each side to a multiple of 14: a 60x90 image becomes 56x84 (scale 56/60 on both sides). The service took
    # the size for the model's only one and stretched every image to 56x56, a program the user's 56x84 pixel
    # values did not fit.
    import json

    from compression.archive.pixel_scaling import PixelScaling, processed_size
    from tests.hf_folders import DEPTH_PROCESSOR

    processor = {**DEPTH_PROCESSOR, "keep_aspect_ratio": True, "ensure_multiple_of": 14, "resample": 3}
    scaling = PixelScaling.from_processor(processor)
    assert processed_size(processor) is None and scaling.resize == ("fit", 56, 56, 14, True)  # kept aspect
    # the wider side decides where it is scaled less (100x40: by 56/40 to 140x56); rounded to the nearest multiple
    assert [scaling.output_size(*size) for size in [(60, 90), (100, 40), (56, 56), (57, 57)]] == [
        (56, 84), (140, 56), (56, 56), (56, 56)]
    rounded = PixelScaling.from_processor({**DEPTH_PROCESSOR, "ensure_multiple_of": 14, "size": {"height": 60,
                                                                                                 "width": 60}})
    assert rounded.resize == ("fit", 60, 60, 14, False) and rounded.output_size(90, 30) == (56, 56)  # 60 rounds
    folder = depth_anything_folder(tmp_path / "depth")
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    archive = tmp_path / "depth.zip"
    archive.write_bytes(zip_bytes(folder))
    assert read_hf_folder(archive).signature()["inputs"][0]["shape"] == [None, 3, None, None]
    rng = np.random.default_rng(0)
    images = {f"{split}.x": rng.integers(0, 256, (4, 60, 90, 3), dtype=np.uint8) for split in ("train", "val")}
    np.savez(tmp_path / "images.npz", **images)
    result = run_folder_pipeline(archive, tmp_path / "images.npz", None, [PruneSpec(sparsity=0.3)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.stages[0].metrics["cosine"] > 0.5
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        pixels = arrays["val.x"]
    assert pixels.shape == (4, 3, 56, 84)
    # torchvision's resize of uint8 images (the fast processor's), as the service resizes every processor's
    resized = torch.nn.functional.interpolate(torch.from_numpy(images["val.x"]).permute(0, 3, 1, 2).contiguous(),
                                              size=(56, 84), mode="bicubic", antialias=True)
    mean, std = (torch.tensor(processor[key]).reshape(1, 3, 1, 1) for key in ("image_mean", "image_std"))
    torch.testing.assert_close(torch.from_numpy(pixels), (resized / 255 - mean) / std, atol=1e-5, rtol=0)
    program = load_program(tmp_path / "work" / "model.pt2").module()
    assert program(torch.from_numpy(pixels)).shape[-2:] == (56, 84)


def test_zoedepth_reflects_each_border_before_its_resize_as_its_processor_does(tmp_path):
    # ZoeDepth's processor (transformers' ZoeDepthImageProcessor, whose module needs torchvision here): rescale,
    # reflect int(sqrt(side / 2) * 3) pixels onto each border, resize the padded image keeping its aspect ratio to
    # multiples of 32 with corners aligned, normalize.
    from compression.archive.pixel_scaling import PixelScaling
    from compression.hf_arrays import image_dataset

    processor = {"image_processor_type": "ZoeDepthImageProcessor", "do_resize": True, "do_pad": True,
                 "size": {"height": 64, "width": 96}, "keep_aspect_ratio": True, "ensure_multiple_of": 32,
                 "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    scaling = PixelScaling.from_processor(processor)
    assert scaling.border(50, 72) == (15, 18)  # int(sqrt(25) * 3), int(sqrt(36) * 3)
    # 80x108 padded: scales 0.8 and 0.89, the width's nearer 1 on both sides: 71 and 96, to multiples of 32
    assert scaling.output_size(50, 72) == (64, 96)
    assert PixelScaling.from_json(scaling.to_json()) == scaling
    assert not PixelScaling.from_processor({**processor, "do_pad": False}).reflect_border
    images = np.random.default_rng(7).integers(0, 256, (2, 50, 72, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"val.x": images})
    with np.load(image_dataset(tmp_path / "images.npz", scaling, [None, 3, None, None], tmp_path)) as converted:
        values = converted["val.x"]
    padded = torch.nn.functional.pad(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, (18, 18, 15, 15),
                                     mode="reflect")
    resized = torch.nn.functional.interpolate(padded, size=(64, 96), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(values, ((resized - 0.5) / 0.5).numpy(), atol=1e-5)
