"""An open-vocabulary detector (`Owlv2ForObjectDetection`, `OwlViTForObjectDetection`, as google/owlv2-base-patch16
is saved) uploaded as a Hugging Face folder with task zero-shot-object-detection: the job names the objects
(evaluation.candidate_labels), the program embeds them once and scores every patch of each image against them,
and the job judges the detections against the upload's."""

import io
import json
import shutil

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import grounding_dino_folder, loaded_image_folder, owl_folder, zip_bytes, zipped_folder

QUERIES = EvaluationSpec(latency=False, candidate_labels=["cat", "dog", "bird"])


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return zipped_folder(tmp_path_factory, "owlv2", owl_folder)


def _images(path, labels: bool = False):
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    np.savez(path, **{"train.x": images[:8], "val.x": images[8:], **({"val.y": np.arange(8) % 3} if labels else {})})
    return path


def test_each_patch_is_scored_against_the_jobs_queries_as_the_model_scores_them(detector, tmp_path):
    from transformers import AutoTokenizer, Owlv2ForObjectDetection

    folder = read_hf_folder(detector)
    assert folder.task == "zero-shot-object-detection"
    assert folder.signature()["outputs"] == [{"name": "detections", "shape": [None, None, None], "dtype": "float32"}]
    result = run_folder_pipeline(detector, _images(tmp_path / "images.npz"), None, [PTQSpec(calibration_samples=8)],
                                 QUERIES, RunContext(), tmp_path / "work")
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        pixels = torch.from_numpy(arrays["val.x"][:2])
    upload = Owlv2ForObjectDetection.from_pretrained(tmp_path / "work" / "source").eval()
    # the queries as transformers' pipeline gives them: the labels themselves, each query of every image
    texts = AutoTokenizer.from_pretrained(tmp_path / "work" / "source")(["cat", "dog", "bird"] * 2, padding=True,
                                                                         return_tensors="pt")
    program = load_program(tmp_path / "work" / "model.pt2")
    with torch.no_grad():
        own = upload(pixel_values=pixels, input_ids=texts["input_ids"], attention_mask=texts["attention_mask"])
        got = program.module()(pixels)
    torch.testing.assert_close(got, torch.cat([own.logits.sigmoid(), own.pred_boxes], -1))  # [2, 16 patches, 3 + 4]
    assert not any("text_model" in name for name in program.state_dict)  # the queries' embeddings are constants
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("detections", "detection_map")
    assert result.baseline["metric_points"] == pytest.approx(100.0)
    stage = result.stages[0].metrics
    assert 0 <= stage["detection_map"] <= 1 and stage["hf_folder"]["written"], stage["hf_folder"]
    # the stage's folder is the whole detector, its text tower copied from the upload
    written = loaded_image_folder(result.stages[0])
    assert type(written).__name__ == "Owlv2ForObjectDetection"
    torch.testing.assert_close(written.owlv2.text_model.embeddings.token_embedding.weight,
                               upload.owlv2.text_model.embeddings.token_embedding.weight)


def test_a_detector_needs_queries_and_no_class_labels(detector, tmp_path):
    with pytest.raises(InvalidUpload, match="looks for the objects the job names: set evaluation.candidate_labels"):
        run_folder_pipeline(detector, _images(tmp_path / "images.npz"), None, [PTQSpec(calibration_samples=8)],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "none")
    with pytest.raises(InvalidUpload, match=r"a zero-shot-object-detection job compares .* remove \['val.y'\]"):
        run_folder_pipeline(detector, _images(tmp_path / "labelled.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], QUERIES, RunContext(), tmp_path / "labelled")


def test_queries_are_the_labels_unless_the_job_sets_a_template():
    assert QUERIES.queries() == ["cat", "dog", "bird"]
    assert QUERIES.model_copy(update={"hypothesis_template": "a photo of a {}"}).queries() == [
        "a photo of a cat", "a photo of a dog", "a photo of a bird"]


def test_grounding_dino_runs_whole_on_the_labels_text_each_label_scored_by_its_best_token(tmp_path):
    from transformers import AutoTokenizer, GroundingDinoForObjectDetection

    from compression.hf_arrays import array_folder_to_program

    folder = grounding_dino_folder(tmp_path / "grounding")
    read = read_hf_folder(io.BytesIO(zip_bytes(folder)))
    assert read.task == "zero-shot-object-detection"
    assert read.signature()["hf"]["num_hidden_layers"] == 2  # a 'layers' student keeps some decoder layers
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    np.savez(tmp_path / "pixels.npz", **{"val.x": images.numpy()})
    # (the program the job's stages start from; every method runs on it in the architecture sweep)
    array_folder_to_program(folder, "zero-shot-object-detection", tmp_path / "pixels.npz", "val",
                            tmp_path / "model.pt2", QUERIES.queries())
    upload = GroundingDinoForObjectDetection.from_pretrained(folder).eval()
    # the text transformers' processor makes of the labels: [CLS] cat . dog . bird . [SEP]
    text = AutoTokenizer.from_pretrained(folder)(["cat. dog. bird."] * 2, return_tensors="pt")
    with torch.no_grad():
        own = upload(pixel_values=images, **text)
        got = load_program(tmp_path / "model.pt2").module()(images)
    torch.testing.assert_close(got, torch.cat([own.logits.sigmoid()[..., [1, 3, 5]], own.pred_boxes], -1))


def test_a_detector_of_another_text_layout_is_refused_at_upload(detector, tmp_path):
    folder = tmp_path / "omdet"
    shutil.unpack_archive(detector, folder, "zip")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "omdet-turbo",
                                                             "architectures": ["OmDetTurboForObjectDetection"]}))
    with pytest.raises(InvalidUpload, match="reads its classes and a task prompt in a text layout of its own"):
        read_hf_folder(io.BytesIO(zip_bytes(folder)))


OWLV2_PROCESSOR = {"image_processor_type": "Owlv2ImageProcessor", "do_resize": True,
                   "size": {"height": 32, "width": 32}, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
                   "do_normalize": True, "do_pad": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711]}


def _owlv2_pixel_values(image: np.ndarray, side: int) -> np.ndarray:
    """OWLv2's PIL image processor's steps for one uint8 image [H, W, 3]: rescale, pad with black to a square
    (bottom, right), scikit-image's resize by scipy (Gaussian blur, then order-1 zoom), normalize."""
    from scipy import ndimage

    pixels = image.astype(np.float64) / 255
    square = max(pixels.shape[:2])
    pixels = np.pad(pixels, ((0, square - pixels.shape[0]), (0, square - pixels.shape[1]), (0, 0)))
    factors = np.array([square / side, square / side, 1])
    blurred = ndimage.gaussian_filter(pixels, np.maximum(0, (factors - 1) / 2), mode="mirror")
    resized = ndimage.zoom(blurred, 1 / factors, order=1, mode="mirror", grid_mode=True)
    normalized = (resized - OWLV2_PROCESSOR["image_mean"]) / OWLV2_PROCESSOR["image_std"]
    return normalized.transpose(2, 0, 1).astype(np.float32)


@pytest.mark.parametrize("height, width", [(48, 80), (90, 40), (64, 64)])
def test_owlv2_images_are_padded_to_a_square_and_blurred_before_their_resize(tmp_path, height, width):
    # Images not at the model's size were resized straight to its square (a wide image stretched, its objects at
    # other places than the upload's processor puts them) with an antialiased interpolation; OWLv2's processor
    # pads to a square first and resizes as scikit-image does.
    from compression.archive.pixel_scaling import PixelScaling
    from compression.hf_arrays import image_dataset

    images = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    np.savez(tmp_path / "raw.npz", **{"val.x": images})
    scaling = PixelScaling.from_processor(OWLV2_PROCESSOR)
    assert PixelScaling.from_json(json.loads(json.dumps(scaling.to_json()))) == scaling  # as the API hands it on
    assert scaling.output_size(height, width) == (32, 32)
    with np.load(image_dataset(tmp_path / "raw.npz", scaling, [None, 3, 32, 32], tmp_path)) as arrays:
        pixel_values = arrays["val.x"]
    expected = np.stack([_owlv2_pixel_values(image, 32) for image in images])
    assert pixel_values.shape == expected.shape == (3, 3, 32, 32)
    assert np.abs(pixel_values - expected).max() < 0.005  # torchvision's kernel spans 3 sigmas, scipy's 4
    if height != width:  # the old way, stretched, is not close
        stretched = PixelScaling.from_processor({**OWLV2_PROCESSOR, "image_processor_type": "ViTImageProcessor"})
        with np.load(image_dataset(tmp_path / "raw.npz", stretched, [None, 3, 32, 32], tmp_path)) as arrays:
            assert np.abs(arrays["val.x"] - expected).max() > 1
