"""An image matting model (`VitMatteForImageMatting`, as hustvl/vitmatte-small-composition-1k is saved) uploaded as
a Hugging Face folder: each image with its trimap as a fourth uint8 channel in an `.npz`, made into the pixel values
its processor makes (the image normalized, the trimap rescaled, both padded to a multiple of 32); the program gives
each pixel's opacity, judged against the upload's mattes."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import vitmatte_folder, zipped_folder


@pytest.fixture(scope="module")
def matting(tmp_path_factory):
    return zipped_folder(tmp_path_factory, "vitmatte", vitmatte_folder)


def _images_with_trimaps(path, channels: int = 4, labels: bool = False):
    """RGBA-like uint8 [16, 40, 56, channels]: random images, and as the last channel a trimap (0, 128 or 255)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 40, 56, channels), dtype=np.uint8)
    if channels == 4:
        images[..., 3] = rng.choice(np.array([0, 128, 255], np.uint8), (16, 40, 56))
    arrays = {"train.x": images[:8], "val.x": images[8:]}
    np.savez(path, **arrays, **({"val.y": rng.random((8, 40, 56)).astype(np.float32)} if labels else {}))
    return path


def test_the_matte_is_computed_from_the_processors_pixel_values_and_judged_as_opacities(matting, tmp_path):
    from transformers import VitMatteForImageMatting

    folder = read_hf_folder(matting)
    assert folder.task == "image-matting"
    assert folder.signature()["inputs"][0]["shape"] == [None, 4, None, None]
    assert folder.signature()["outputs"] == [{"name": "alphas", "shape": [None, 1, None, None], "dtype": "float32"}]
    images = _images_with_trimaps(tmp_path / "images.npz")
    result = run_folder_pipeline(matting, images, None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    with np.load(images) as arrays:
        raw = arrays["val.x"][:2].astype(np.float32).transpose(0, 3, 1, 2)
    # VitMatteImageProcessor: the image (x / 255 - 0.5) / 0.5, the trimap x / 255, zeros to 64 x 64
    expected = np.zeros((2, 4, 64, 64), np.float32)
    expected[:, :3, :40, :56] = (raw[:, :3] / 255 - 0.5) / 0.5
    expected[:, 3:, :40, :56] = raw[:, 3:] / 255
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        pixels = arrays["val.x"][:2]
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    upload = VitMatteForImageMatting.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        got = load_program(tmp_path / "work" / "model.pt2").module()(torch.from_numpy(pixels))
        torch.testing.assert_close(got, upload(pixel_values=torch.from_numpy(pixels)).alphas)
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("sigmoid", "soft_dice")
    stage = result.stages[0].metrics
    assert 0 < stage["soft_dice"] <= 1 and stage["mae"] >= 0 and "hf_folder" in stage


def test_images_without_trimaps_and_reference_mattes_are_refused_with_what_to_give(matting, tmp_path):
    with pytest.raises(InvalidUpload, match=r"takes each image with its trimap as a fourth channel"):
        run_folder_pipeline(matting, _images_with_trimaps(tmp_path / "rgb.npz", channels=3), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "rgb")
    with pytest.raises(InvalidUpload, match=r"an image-matting job compares each alpha matte .* remove \['val.y'\]"):
        run_folder_pipeline(matting, _images_with_trimaps(tmp_path / "labelled.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "labelled")
