"""A semantic segmentation model (`SegformerForSemanticSegmentation`, DPT, BEiT, MobileViT, UperNet) uploaded as a
Hugging Face folder is read for its task from `architectures`: the program outputs the class logits at every pixel
of its output map, channels last, the job compares them pixel by pixel with the upload's (top-1 agreement, KL), and
the compressed model comes back as a folder `from_pretrained` loads; with label masks, by pixel accuracy and mean
IoU."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.npz import IGNORED_LABEL
from compression.context import RunContext
from compression.formats import hf_folder
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import image_folder, mask2former_folder, segformer_folder, zip_bytes


@pytest.fixture(scope="module")
def segformer(tmp_path_factory):
    directory = tmp_path_factory.mktemp("segformer")
    archive = directory / "segformer.zip"
    archive.write_bytes(zip_bytes(segformer_folder(directory / "segformer")))
    return archive


def _images(path):
    rng = np.random.default_rng(0)
    np.savez(path, **{f"{split}.x": rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
                      for split in ("train", "val")})
    return path


def test_the_task_is_read_from_the_head_and_the_output_is_class_logits_per_pixel(segformer, tmp_path):
    folder = read_hf_folder(segformer)
    assert folder.task == "semantic-segmentation"
    signature = folder.signature()
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 64, 64], "dtype": "float32"}]
    assert signature["outputs"] == [{"name": "logits", "shape": [None, None, None, 5], "dtype": "float32"}]
    assert signature["hf"]["classes"]["names"] == [f"class{index}" for index in range(5)]
    assert read_hf_folder(segformer, task="image-segmentation").task == "semantic-segmentation"  # pipeline name
    classifier = tmp_path / "vit.zip"
    classifier.write_bytes(zip_bytes(image_folder(tmp_path / "vit")))
    with pytest.raises(InvalidUpload, match="transformers has no semantic-segmentation model for model_type 'vit'"):
        read_hf_folder(classifier, task="semantic-segmentation")


def test_a_segmentation_job_is_judged_pixel_by_pixel_and_written_back_as_a_folder(segformer, tmp_path):
    from transformers import SegformerForSemanticSegmentation

    result = run_folder_pipeline(segformer, _images(tmp_path / "images.npz"), None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "logits" and result.baseline["metric"] == "top1_agreement"
    # The program computes what transformers does, its class axis last: SegFormer's map is a quarter of the image.
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        pixels = torch.from_numpy(arrays["val.x"][:4])
    upload = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        expected = upload(pixel_values=pixels).logits
        got = load_program(tmp_path / "work" / "model.pt2").module()(pixels)
    assert got.shape == (4, 16, 16, 5)
    torch.testing.assert_close(got, expected.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-4)
    stage = result.stages[0]
    assert stage.metrics["metric"] == "top1_agreement" and 0.9 <= stage.metrics["top1_agreement"] <= 1
    assert stage.metrics["hf_folder"]["written"] and stage.metrics["hf_folder"]["compared_output"] == "logits"
    [artifact] = [artifact for artifact in stage.artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    assert type(hf_folder.load(artifact.path)).__name__ == "SegformerForSemanticSegmentation"


def test_label_masks_at_the_images_size_judge_pixel_accuracy_and_mean_iou(segformer, tmp_path):
    """Masks as datasets ship them ([N, H, W] at the image's size, 255 where a pixel is unlabelled) are sampled at
    the model's 16x16 map: each 4x4 block of pixels is one label there."""
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 5, (12, 16, 16))
    blocks[:, :2] = 255  # unlabelled rows of the map
    masks = np.kron(blocks, np.ones((4, 4), np.int64)).astype(np.uint8)
    images = _images(tmp_path / "images.npz")
    with np.load(images) as arrays:
        np.savez(tmp_path / "labelled.npz", **arrays, **{"val.y": masks, "train.y": masks})
    result = run_folder_pipeline(segformer, tmp_path / "labelled.npz", None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    with np.load(tmp_path / "work" / "masks.npz") as arrays:
        assert (arrays["val.y"] == np.where(blocks == 255, IGNORED_LABEL, blocks)).all()
        pixels = torch.from_numpy(arrays["val.x"])
    with torch.no_grad():
        predicted = load_program(tmp_path / "work" / "model.pt2").module()(pixels).argmax(-1).numpy()
    labelled = blocks != 255
    baseline = result.baseline
    assert baseline["metric"] == "accuracy"
    assert baseline["accuracy"] == pytest.approx((predicted == blocks)[labelled].mean())
    ious = [((predicted == c) & (blocks == c) & labelled).sum() / (((predicted == c) | (blocks == c)) & labelled).sum()
            for c in range(5) if (((predicted == c) | (blocks == c)) & labelled).any()]
    assert baseline["mean_iou"] == pytest.approx(np.mean(ious))
    assert "mean_iou" in result.stages[0].metrics


def test_masks_that_do_not_fit_the_model_are_refused(segformer, tmp_path):
    images = _images(tmp_path / "images.npz")
    with np.load(images) as arrays:
        np.savez(tmp_path / "labelled.npz", **arrays, **{"val.y": np.full((12, 64, 64), 7, np.uint8)})
    with pytest.raises(InvalidUpload, match=r"'val.y' holds class 7, but the model has 5 classes"):
        run_folder_pipeline(segformer, tmp_path / "labelled.npz", None, [PTQSpec(calibration_samples=8)],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_a_mask_classifier_segments_as_the_class_map_of_its_queries_and_masks(tmp_path):
    """Mask2Former scores object queries and their masks: its program gives the class map transformers' semantic
    post-processing computes from them, as log-probabilities per pixel, on which a job is judged as on any
    segmentation model's (the whole job, and its stages' Mask2Former folders: the architecture sweep)."""
    from transformers import Mask2FormerForUniversalSegmentation

    from compression.hf_program import load_folder_model, model_program

    archive = tmp_path / "mask2former.zip"
    archive.write_bytes(zip_bytes(mask2former_folder(tmp_path / "mask2former")))
    folder = read_hf_folder(archive, extract_to=tmp_path / "source")
    assert folder.task == "semantic-segmentation"
    assert folder.signature()["outputs"][0]["shape"] == [None, None, None, 5]
    pixels = torch.rand(2, 3, 64, 64)
    upload = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "source").eval()
    with torch.no_grad():
        output = upload(pixel_values=pixels)
        got = model_program(load_folder_model(tmp_path / "source", "semantic-segmentation"), (pixels,)).module()(
            pixels)
    classes = output.class_queries_logits.softmax(-1)[..., :-1]
    expected = torch.einsum("bqc,bqhw->bchw", classes, output.masks_queries_logits.sigmoid()).argmax(1)
    assert got.shape == (2, 16, 16, 5) and (got.argmax(-1) == expected).all()
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(2, 16, 16))


def test_a_mask2former_processor_rounds_its_resize_up_to_its_size_divisor(tmp_path):
    # Mask2Former's and MaskFormer's processors resize to a multiple of size_divisor (32), rounding up: a 480x640
    # image for {"shortest_edge": 512, "longest_edge": 2048} is 512x704, not 512x682.
    from transformers.image_transforms import get_size_with_aspect_ratio

    from compression.archive.hf_folder import image_input_shape
    from compression.archive.pixel_scaling import PixelScaling
    from compression.hf_arrays import image_dataset

    processor = {"image_processor_type": "Mask2FormerImageProcessor", "do_resize": True, "resample": 2,
                 "size": {"shortest_edge": 512, "longest_edge": 2048}, "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    scaling = PixelScaling.from_processor(processor)
    for size in [(480, 640), (300, 1200), (512, 512), (333, 500)]:
        expected = tuple(-(-side // 32) * 32 for side in get_size_with_aspect_ratio(size, 512, 2048))
        assert scaling.output_size(*size) == expected, size
    assert scaling.output_size(480, 640) == (512, 704)
    assert PixelScaling.from_json(scaling.to_json()) == scaling
    exact = {**processor, "size": {"height": 50, "width": 70}, "size_divisor": 16}
    assert image_input_shape({}, exact) == [None, 3, 64, 80]
    small = PixelScaling.from_processor({**processor, "size": {"shortest_edge": 20, "longest_edge": 40}})
    np.savez(tmp_path / "images.npz", **{"val.x": np.zeros((2, 30, 40, 3), np.uint8)})
    with np.load(image_dataset(tmp_path / "images.npz", small, [None, 3, None, None], tmp_path)) as converted:
        assert converted["val.x"].shape == (2, 3, 32, 32)  # 20x26, rounded up
