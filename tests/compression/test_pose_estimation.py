"""A top-down pose estimator (`VitPoseForPoseEstimation`, as usyd-community/vitpose-base-simple is saved) uploaded as
a Hugging Face folder: person crops as uint8 images in an `.npz`, scaled as its processor says; the program gives
each keypoint's heatmap with its positions flattened, and the job judges where each keypoint peaks against the
upload's."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import int8_job_and_rows, vitpose_folder, zip_bytes


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vitpose")
    archive = directory / "vitpose.zip"
    archive.write_bytes(zip_bytes(vitpose_folder(directory / "vitpose")))
    return archive


def _crops(path, labels: bool = False):
    crops = np.random.default_rng(0).integers(0, 256, (16, 64, 48, 3), dtype=np.uint8)
    np.savez(path, **{"train.x": crops[:8], "val.x": crops[8:], **({"val.y": np.arange(8) % 5} if labels else {})})
    return path


def test_each_keypoints_heatmap_is_judged_by_where_it_peaks(estimator, tmp_path):
    from transformers import VitPoseForPoseEstimation

    folder = read_hf_folder(estimator)
    assert folder.task == "pose-estimation"
    assert folder.signature()["inputs"][0]["shape"] == [None, 3, 64, 48]
    assert folder.signature()["outputs"] == [{"name": "heatmaps", "shape": [None, 5, None], "dtype": "float32"}]
    result, pixels = int8_job_and_rows(estimator, _crops(tmp_path / "crops.npz"), tmp_path / "work")
    upload = VitPoseForPoseEstimation.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        expected = upload(pixel_values=pixels).heatmaps
        got = load_program(tmp_path / "work" / "model.pt2").module()(pixels)
    torch.testing.assert_close(got, expected.flatten(2))  # [batch, keypoints, 16 x 12]
    assert result.baseline["output_kind"] == "logits" and result.baseline["metric"] == "top1_agreement"
    stage = result.stages[0]
    assert 0 <= stage.metrics["top1_agreement"] <= 1 and "hf_folder" in stage.metrics


def test_keypoint_labels_are_refused_with_what_the_job_compares(estimator, tmp_path):
    with pytest.raises(InvalidUpload, match="a pose-estimation job compares where each keypoint's heatmap peaks"):
        run_folder_pipeline(estimator, _crops(tmp_path / "crops.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
