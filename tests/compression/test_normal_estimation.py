"""A surface normal estimator (`Sapiens2ForNormalEstimation`, as facebook's Sapiens 2 normal checkpoints are saved)
uploaded as a Hugging Face folder: person crops as uint8 images in an `.npz`; the program gives each pixel's
L2-normalized normal, as transformers' post-processing does, so that the job's cosine is the mean cosine of the
angle between the compressed model's normals and the upload's. Its pointmap head's points are divided by its
scale, as the post-processing does."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import int8_job_and_rows, sapiens2_folder, zip_bytes, zipped_folder


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    return zipped_folder(tmp_path_factory, "sapiens2", sapiens2_folder)


def _crops(path, labels: bool = False):
    crops = np.random.default_rng(0).integers(0, 256, (16, 64, 48, 3), dtype=np.uint8)
    np.savez(path, **{"train.x": crops[:8], "val.x": crops[8:],
                      **({"val.y": np.zeros((8, 3, 64, 48), np.float32)} if labels else {})})
    return path


def test_each_pixels_normal_is_a_unit_vector_judged_by_its_angle(estimator, tmp_path):
    from transformers import Sapiens2ForNormalEstimation

    folder = read_hf_folder(estimator)
    assert folder.task == "normal-estimation"
    assert folder.signature()["inputs"][0]["shape"] == [None, 3, 64, 48]
    assert folder.signature()["outputs"] == [{"name": "normals", "shape": [None, 3, None, None], "dtype": "float32"}]
    result, pixels = int8_job_and_rows(estimator, _crops(tmp_path / "crops.npz"), tmp_path / "work")
    upload = Sapiens2ForNormalEstimation.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        expected = F.normalize(upload(pixel_values=pixels).normals, p=2, dim=1, eps=1e-8)
        got = load_program(tmp_path / "work" / "model.pt2").module()(pixels)
    torch.testing.assert_close(got, expected)
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("hidden_states", "cosine")
    stage = result.stages[0].metrics
    assert 0 < stage["cosine"] <= 1 and "hf_folder" in stage


def test_ground_truth_normals_are_refused_with_what_the_job_compares(estimator, tmp_path):
    with pytest.raises(InvalidUpload, match="a normal-estimation job compares each pixel's unit normal"):
        run_folder_pipeline(estimator, _crops(tmp_path / "crops.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")


def test_a_pointmap_is_its_points_over_the_models_scale(tmp_path):
    from transformers import Sapiens2ForPointmapEstimation

    archive = tmp_path / "points.zip"
    archive.write_bytes(zip_bytes(sapiens2_folder(tmp_path / "points", "pointmap-estimation")))
    assert read_hf_folder(archive).signature()["outputs"][0]["name"] == "pointmaps"
    result, pixels = int8_job_and_rows(archive, _crops(tmp_path / "crops.npz"), tmp_path / "work")
    upload = Sapiens2ForPointmapEstimation.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        own = upload(pixel_values=pixels)
        got = load_program(tmp_path / "work" / "model.pt2").module()(pixels)
    torch.testing.assert_close(got, own.pointmaps / own.scales[:, :, None, None])
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("hidden_states", "cosine")
