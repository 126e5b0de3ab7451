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
