"""A video classifier (`VideoMAEForVideoClassification`, as MCG-NJU/videomae-base-finetuned-kinetics is saved)
uploaded as a Hugging Face folder: its clips come as uint8 frames in an `.npz` ([N, frames, H, W, 3], channels-last
as video decoders give them), each frame resized, cropped and normalized as its processor says, the program takes
[batch, frames, channels, height, width], and the job hands back a folder `from_pretrained` loads."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import VIDEOMAE_PROCESSOR, last_folder_of_accuracy_job, video_folder, zip_bytes


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    directory = tmp_path_factory.mktemp("video")
    archive = directory / "videomae.zip"
    archive.write_bytes(zip_bytes(video_folder(directory / "videomae")))
    return archive


def _clips(path, frames: int = 4, height: int = 40, width: int = 48):
    """Labelled uint8 clips, larger than the model's 32x32 (the processor resizes and crops each frame)."""
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (24, frames, height, width, 3), dtype=np.uint8)
    np.savez(path, **{"train.x": clips[:16], "val.x": clips[16:], "train.y": rng.integers(0, 3, 16),
                      "val.y": rng.integers(0, 3, 8)})
    return path


def test_the_task_is_read_from_the_head_and_the_program_takes_clips(classifier):
    folder = read_hf_folder(classifier)
    assert folder.task == "video-classification"
    assert folder.signature()["inputs"] == [{"name": "pixel_values", "shape": [None, 4, 3, 32, 32],
                                             "dtype": "float32"}]
    assert folder.signature()["outputs"][0]["shape"] == [None, 3]


def test_a_video_job_scales_each_frame_is_judged_by_accuracy_and_written_back(classifier, tmp_path):
    result = run_folder_pipeline(classifier, _clips(tmp_path / "clips.npz"), None,
                                 [KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2, "batch_size": 4}),
                                  PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    with np.load(tmp_path / "clips.npz") as raw, np.load(tmp_path / "work" / "dataset.npz") as scaled:
        pixels, frame = scaled["val.x"], raw["val.x"][0, 1]
    assert pixels.shape == (8, 4, 3, 32, 32) and pixels.dtype == np.float32
    # frame 1 of clip 0: shortest edge to 32 (40x48 -> 32x38), center crop 32x32, ImageNet normalization
    resized = torch.nn.functional.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None].float(), size=(32, 38),
                                              mode="bilinear", antialias=True)[0, :, :, 3:35] / 255
    mean, std = (torch.tensor(VIDEOMAE_PROCESSOR[key])[:, None, None] for key in ("image_mean", "image_std"))
    np.testing.assert_allclose(pixels[0, 1], ((resized - mean) / std).numpy(), atol=0.05)
    loaded = last_folder_of_accuracy_job(result, rows=8)
    assert type(loaded).__name__ == "VideoMAEForVideoClassification" and loaded.config.num_hidden_layers == 1


def test_clips_of_another_frame_count_are_refused_with_the_count_the_model_takes(classifier, tmp_path):
    with pytest.raises((InvalidUpload, ValueError), match="4"):
        run_folder_pipeline(classifier, _clips(tmp_path / "clips.npz", frames=6), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
