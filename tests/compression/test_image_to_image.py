"""An image restorer (`Swin2SRForImageSuperResolution`, task image-to-image: super-resolution, denoising) uploaded
as a Hugging Face folder: uint8 images of any one size in an `.npz`, scaled as its processor says; the program
outputs the image it makes, [batch, channels, height x 2, width x 2], compared whole with the upload's."""

import numpy as np
import pytest

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec
from tests.hf_folders import super_resolution_folder, zip_bytes


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("swin2sr")
    archive = directory / "swin2sr.zip"
    archive.write_bytes(zip_bytes(super_resolution_folder(directory / "swin2sr")))
    return archive


def _images(path, labels: bool = False):
    images = np.random.default_rng(0).integers(0, 256, (16, 20, 24, 3), dtype=np.uint8)
    np.savez(path, **{"train.x": images[:8], "val.x": images[8:], **({"val.y": np.arange(8) % 2} if labels else {})})
    return path


def test_a_restorer_takes_any_size_and_its_images_are_compared_whole(restorer, tmp_path):
    folder = read_hf_folder(restorer)
    assert folder.task == "image-to-image"
    assert folder.signature()["inputs"][0]["shape"] == [None, 3, None, None]
    assert folder.signature()["outputs"] == [{"name": "reconstruction", "shape": [None, 3, None, None],
                                              "dtype": "float32"}]
    result = run_folder_pipeline(restorer, _images(tmp_path / "images.npz"), None,
                                 [PruneSpec(sparsity=0.3), PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "hidden_states" and result.baseline["metric"] == "cosine"
    for stage in result.stages:
        assert 0.5 < stage.metrics["cosine"] <= 1 and "sqnr_db" in stage.metrics
    assert result.stages[0].metrics["hf_folder"]["written"]


def test_labels_are_refused_with_what_the_job_compares(restorer, tmp_path):
    with pytest.raises(InvalidUpload, match="an image-to-image job compares each image"):
        run_folder_pipeline(restorer, _images(tmp_path / "images.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
