"""An image classifier uploaded as a Hugging Face folder (ViT, ResNet, ...: task `image-classification`) keeps its
head, takes the `.npz`'s images (uint8 pixels scaled as its preprocessor_config.json says, or pixel values), runs
every method as a `.pt2` job does, and is handed back as a folder `from_pretrained` loads where compressed-tensors
can hold it."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import image_input_shape, read_hf_folder
from compression.archive.pixel_scaling import PixelScaling
from compression.context import RunContext
from compression.formats import hf_folder
from compression.hf_arrays import image_dataset
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PruneSpec, PTQSpec
from tests.hf_folders import VIT_PROCESSOR, bert_folder, image_folder, loaded_image_folder, scaled_val_images, zip_bytes

CLASSES = 4


def _zipped(directory, name: str, **options):
    archive = directory / f"{name}.zip"
    archive.write_bytes(zip_bytes(image_folder(directory / name, classes=CLASSES, **options)))
    return archive


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return _zipped(tmp_path_factory.mktemp("vit"), "vit")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 random 32x32 RGB images, channels-last uint8 as image libraries give them, the validation ones labelled."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("images") / "images.npz"
    np.savez(path, **{"train.x": pixels[:24], "val.x": pixels[24:], "val.y": rng.integers(0, CLASSES, 16)})
    return path


def test_the_task_and_the_pixel_input_are_read_from_the_folder(vit, tmp_path):
    folder = read_hf_folder(vit)
    signature = folder.signature()
    assert folder.task == "image-classification"
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 32, 32], "dtype": "float32"}]
    assert signature["outputs"] == [{"name": "logits", "shape": [None, CLASSES], "dtype": "float32"}]
    assert signature["hf"]["pixel_scaling"] == {"rescale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3,
                                                "resize": None, "crop": None, "resample": "bilinear"}
    # A convolutional network takes any size; a folder without a processor cannot have its pixels scaled.
    resnet = read_hf_folder(_zipped(tmp_path, "resnet", architecture="resnet", processor=None))
    assert resnet.signature()["inputs"][0]["shape"] == [None, 3, None, None] and resnet.pixel_scaling is None
    # A base model without a head gives its features (tests/compression/test_array_features.py).
    assert read_hf_folder(_zipped(tmp_path, "encoder", feature_extraction=True)).task == "image-feature-extraction"
    text = tmp_path / "bert.zip"
    text.write_bytes(zip_bytes(bert_folder(tmp_path / "bert", classes=2)))
    with pytest.raises(InvalidUpload, match="transformers has no image-classification model for model_type 'bert'"):
        read_hf_folder(text, task="image-classification")


@pytest.mark.parametrize("config, processor, expected", [
    ({"image_size": 224}, {"size": {"height": 224, "width": 224}}, [224, 224]),  # ViT
    ({"image_size": 518}, {"do_center_crop": True, "crop_size": {"height": 224, "width": 224},
                           "size": {"shortest_edge": 256}}, [224, 224]),  # DINOv2: run on its crop
    ({}, {"size": {"shortest_edge": 224}, "crop_pct": 0.875}, [None, None]),  # ConvNeXt, ResNet: any size
    ({"image_size": [384, 256], "num_channels": 1}, None, [384, 256]),  # no processor: the config
    ({"image_size": 32}, {"do_normalize": False}, [32, 32]),  # a processor silent on size
    ({"image_size": 10**6}, None, [None, None]),  # past MAX_IMAGE_SIDE: not read
])
def test_the_image_size_is_the_one_the_processor_gives_the_model(config, processor, expected):
    assert image_input_shape(config, processor) == [None, config.get("num_channels", 3), *expected]


def test_raw_pixels_are_scaled_as_the_processor_declares():
    scaling = PixelScaling.from_processor({**VIT_PROCESSOR, "image_mean": [0.4, 0.5, 0.6],
                                           "image_std": [0.2, 0.25, 0.5]})
    last = np.random.default_rng(1).integers(0, 256, (3, 5, 6, 3), dtype=np.uint8)
    expected = (last.transpose(0, 3, 1, 2) / 255 - np.array([0.4, 0.5, 0.6]).reshape(1, 3, 1, 1)) / \
        np.array([0.2, 0.25, 0.5]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(scaling.apply(last, 3), expected, rtol=1e-5)
    np.testing.assert_allclose(scaling.apply(last.transpose(0, 3, 1, 2).copy(), 3), expected, rtol=1e-5)
    gray = PixelScaling.from_processor({"do_normalize": False}).apply(last[..., 0], 1)
    np.testing.assert_allclose(gray, last[:, None, :, :, 0] / 255, rtol=1e-6)
    assert PixelScaling.from_processor({"do_normalize": True}) is None  # no mean and std to normalize with
    assert PixelScaling.from_processor(None) is None


def test_an_image_classifier_job_is_judged_on_labels_and_written_back_as_a_folder(vit, images, tmp_path):
    # The patch embedding is a convolution, which compressed-tensors cannot quantize: kept float, the rest int8.
    result = run_folder_pipeline(vit, images, None, [PTQSpec(calibration_samples=8, exclude=["*patch_embeddings*"])],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "accuracy" and result.baseline["output_kind"] == "logits"
    stage = result.stages[0]
    assert stage.metrics["top1_agreement"] > 0.8 and stage.metrics["hf_folder"]["format"] == "int-quantized"
    loaded = loaded_image_folder(stage)
    assert type(loaded).__name__ == "ViTForImageClassification"
    with torch.no_grad():
        predictions = loaded(pixel_values=scaled_val_images(images)).logits.argmax(1).numpy()
    with np.load(images) as arrays:
        assert (predictions == arrays["val.y"]).mean() == pytest.approx(stage.metrics["accuracy"], abs=1 / 16 + 1e-6)


def test_an_int8_patch_convolution_is_written_as_its_dequantized_weight_and_the_folder_measured(vit, images,
                                                                                                 tmp_path):
    """compressed-tensors has no convolution: the int8 patch embedding is written as the float weight the stage
    computes with (its input in float), and the folder, another model than the stage's, is measured itself. It had
    no folder before 2026-12-06 (the reason said to exclude the convolution)."""
    result = run_folder_pipeline(vit, images, "image-classification", [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage = result.stages[0]
    written = stage.metrics["hf_folder"]
    assert written["written"] and written["dequantized_convs"] == ["vit.embeddings.patch_embeddings.projection"]
    assert written["measured_as_its_own_model"]["metric_points"] >= stage.metrics["metric_points"] - 0.1
    [artifact] = [artifact for artifact in stage.artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    conv = loaded.vit.embeddings.patch_embeddings.projection.weight.detach()
    # the stage's int8 grid: per output channel, the gaps between its values are whole multiples of one step
    # (a float weight's are not)
    for channel in conv.reshape(conv.shape[0], -1):
        gaps = channel.unique().diff()
        steps = gaps / gaps.min()
        assert torch.allclose(steps, steps.round(), atol=1e-2)
    assert sum(hasattr(module, "weight_scale") for module in loaded.modules()) == 13  # the linears stay int8


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_cnn_folder_takes_channels_first_pixel_values_and_prunes(tmp_path, dtype):
    # A bfloat16 ResNet's convolutions refused the float32 pixels until the program cast them (ViT's do it).
    resnet = _zipped(tmp_path, "resnet", architecture="resnet", processor=None, dtype=dtype)
    values = np.random.default_rng(2).normal(size=(24, 3, 40, 40)).astype(np.float32)  # any size
    np.savez(tmp_path / "values.npz", **{"train.x": values[:16], "val.x": values[16:]})
    result = run_folder_pipeline(resnet, tmp_path / "values.npz", None, [PruneSpec()],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["metric"] == "top1_agreement"
    stage = result.stages[0]
    pruned = stage.metrics["method_metrics"]
    assert pruned["nonzero_parameters"] < pruned["parameters"] and stage.metrics["hf_folder"]["written"]


def test_uint8_images_without_a_processor_are_refused_with_what_to_do(images, tmp_path):
    with pytest.raises(InvalidUpload, match="no preprocessor_config.json"):
        image_dataset(images, None, [None, 3, 32, 32], tmp_path)


def test_a_backbone_config_gets_a_layers_student_that_loads(images, tmp_path):
    # DINOv2's config names a stage per layer and picks its output among them; the student's named the teacher's
    # last stage, which it does not have, and transformers refused the student's folder.
    dinov2 = _zipped(tmp_path, "dinov2", architecture="dinov2")
    result = run_folder_pipeline(dinov2, images, None, [KDSpec(student={"kind": "layers", "keep": 1},
                                                               training={"steps": 2, "batch_size": 4})],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage = result.stages[0]
    assert stage.metrics["parameters"] < result.baseline["parameters"] and stage.metrics["hf_folder"]["written"]
    [artifact] = [artifact for artifact in stage.artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    assert hf_folder.load(artifact.path).config.num_hidden_layers == 1


def test_a_regression_head_is_judged_by_its_values(tmp_path):
    # config.json problem_type "regression" declares the labels values, as for a text regression head.
    scorer = tmp_path / "scorer.zip"
    scorer.write_bytes(zip_bytes(image_folder(tmp_path / "scorer", classes=1, problem_type="regression")))
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "scores.npz", **{"train.x": pixels[:16], "val.x": pixels[16:],
                                         "train.y": rng.integers(1, 6, 16).astype(np.float32),
                                         "val.y": rng.integers(1, 6, 8).astype(np.float32)})  # ratings 1..5
    result = run_folder_pipeline(scorer, tmp_path / "scores.npz", None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "regression" and result.baseline["metric"] == "label_spearman"


def test_images_of_another_size_are_resized_and_cropped_as_the_processor_declares(tmp_path):
    # DINOv2's processor: the shortest edge to 36 (bicubic), then the center 32x32 crop.
    processor = {**VIT_PROCESSOR, "do_resize": True, "size": {"shortest_edge": 36}, "resample": 3,
                 "do_center_crop": True, "crop_size": {"height": 32, "width": 32}}
    scaling = PixelScaling.from_processor(processor)
    assert scaling.resized_size(40, 60) == (36, 54) and scaling.output_size(40, 60) == (32, 32)
    assert PixelScaling.from_processor({**VIT_PROCESSOR, "size": {"height": 32, "width": 32}}).output_size(
        64, 48) == (32, 32)
    # No upload makes the worker allocate without bound: absurd sizes are not read, extreme resizes refused.
    assert PixelScaling.from_processor({**VIT_PROCESSOR, "size": {"height": 10**6, "width": 10**6}}).resize is None
    assert scaling.output_size(1, 5000) is None  # its shortest edge to 36 would make it 180,000 wide
    pixels = np.random.default_rng(4).integers(0, 256, (5, 40, 60, 3), dtype=np.uint8)
    np.savez(tmp_path / "big.npz", **{"val.x": pixels})
    with np.load(image_dataset(tmp_path / "big.npz", scaling, [None, 3, 32, 32], tmp_path)) as converted:
        values = converted["val.x"]
    resized = torch.nn.functional.interpolate(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
                                              size=(36, 54), mode="bicubic", antialias=True)
    expected = (resized[:, :, 2:34, 11:43].numpy() / 255 - 0.5) / 0.5
    assert values.shape == (5, 3, 32, 32)
    np.testing.assert_allclose(values, expected, atol=1e-5)
    with pytest.raises(InvalidUpload, match="which the folder's processor does not bring to the model's 32x32"):
        image_dataset(tmp_path / "big.npz", PixelScaling.from_processor(VIT_PROCESSOR), [None, 3, 32, 32], tmp_path)


def test_a_convnext_processor_crops_by_its_crop_pct_though_the_model_takes_any_size(tmp_path):
    # ConvNeXt's (and ResNet's) processor resizes the shortest edge to edge / crop_pct and crops the center
    # edge x edge. The model takes any size, and images of another size were used as they were: the program was
    # exported at their size, which the user's 224x224 pixel values did not fit.
    processor = {**VIT_PROCESSOR, "image_processor_type": "ConvNextImageProcessor", "do_resize": True,
                 "size": {"shortest_edge": 32}, "crop_pct": 0.875, "resample": 3}
    assert image_input_shape({}, processor) == [None, 3, None, None]
    scaling = PixelScaling.from_processor(processor)
    assert scaling.resizes_for_any_model_size and scaling.output_size(48, 64) == (32, 32)
    assert scaling.resized_size(48, 64) == (36, 48)  # int(32 / 0.875) = 36
    large = PixelScaling.from_processor({**processor, "size": {"shortest_edge": 384}})
    assert large.output_size(480, 640) == (384, 384) and large.crop is None  # 384 and up: resized, not cropped
    assert not PixelScaling.from_processor({**processor, "image_processor_type": "BitImageProcessor"}).crop
    pixels = np.random.default_rng(5).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"val.x": pixels})
    with np.load(image_dataset(tmp_path / "images.npz", scaling, [None, 3, None, None], tmp_path)) as converted:
        values = converted["val.x"]
    resized = torch.nn.functional.interpolate(torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
                                              size=(36, 48), mode="bicubic", antialias=True)
    np.testing.assert_allclose(values, (resized[:, :, 2:34, 8:40].numpy() / 255 - 0.5) / 0.5, atol=1e-5)


def test_a_detr_processor_resizes_by_its_shortest_edge_within_its_longest(tmp_path):
    # DETR's processor: the shortest side to 800 unless the longest would pass 1333, then the longest to 1333.
    # The longest edge was not read, and images for a detector (which takes any size) were used at their own.
    from transformers.image_transforms import get_size_with_aspect_ratio

    scaling = PixelScaling.from_processor({**VIT_PROCESSOR, "image_processor_type": "DetrImageProcessor",
                                           "do_resize": True, "size": {"shortest_edge": 800, "longest_edge": 1333}})
    sizes = [(480, 640), (300, 1200), (1200, 300), (800, 1000), (100, 5000), (641, 481)]
    assert [scaling.output_size(*size) for size in sizes] == [
        get_size_with_aspect_ratio(size, 800, 1333) for size in sizes]
    assert scaling.output_size(300, 1200) == (333, 1333) and scaling.resizes_for_any_model_size
    assert scaling.output_size(1, 5000) is None  # transformers would make it 0 high: not resized
    # YOLOS's get_size_with_aspect_ratio_yolos (its module imports torchvision): DETR's, cut down to multiples of 16
    yolos = PixelScaling.from_processor({**VIT_PROCESSOR, "image_processor_type": "YolosImageProcessor",
                                         "do_resize": True, "size": {"shortest_edge": 800, "longest_edge": 1333}})
    assert [yolos.output_size(*size) for size in sizes] == [
        tuple(side - side % 16 for side in get_size_with_aspect_ratio(size, 800, 1333)) for size in sizes]
    assert yolos.output_size(480, 640) == (800, 1056)
    pixels = np.random.default_rng(6).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"val.x": pixels})
    small = PixelScaling.from_processor({**VIT_PROCESSOR, "do_resize": True,
                                         "size": {"shortest_edge": 24, "longest_edge": 30}})
    with np.load(image_dataset(tmp_path / "images.npz", small, [None, 3, None, None], tmp_path)) as converted:
        assert converted["val.x"].shape == (2, 3, 22, 30)  # 24 would make it 32 wide: the longest edge decides


def test_processors_saved_by_older_transformers_are_read_by_their_family():
    # microsoft/resnet-50's preprocessor_config.json names a feature extractor and gives its size as one number,
    # the shortest edge for ConvNeXt's processor: it was read as a 224x224 stretch.
    from compression.archive.pixel_scaling import processor_family

    assert [processor_family({"image_processor_type": name}) for name in (
        "ConvNextImageProcessorFast", "Owlv2ImageProcessor", "GLPNFeatureExtractor")] == ["ConvNext", "Owlv2", "GLPN"]
    resnet = {"feature_extractor_type": "ConvNextFeatureExtractor", "crop_pct": 0.875, "do_normalize": True,
              "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
              "resample": 3, "size": 224}
    scaling = PixelScaling.from_processor(resnet)
    assert scaling.resized_size(480, 640) == (256, 341) and scaling.output_size(480, 640) == (224, 224)
    assert image_input_shape({}, resnet) == [None, 3, None, None]  # a CNN: any size, images brought to 224
    vit = PixelScaling.from_processor({**resnet, "feature_extractor_type": "ViTFeatureExtractor"})
    assert vit.output_size(480, 640) == (224, 224) and vit.resize == ("exact", 224, 224)  # ViT's: a square
    detr = PixelScaling.from_processor({**resnet, "feature_extractor_type": "DetrFeatureExtractor", "size": 800,
                                        "max_size": 1333})
    assert detr.output_size(300, 1200) == (333, 1333)  # max_size: the longest edge of older DETR configs
    # GLPN's processor cuts each side down to a multiple of 32 and does not normalize.
    glpn = PixelScaling.from_processor({"feature_extractor_type": "GLPNFeatureExtractor", "do_rescale": True,
                                        "do_resize": True, "resample": 2, "size_divisor": 32})
    assert glpn is not None and glpn.mean is None and glpn.output_size(480, 650) == (480, 640)
    assert image_input_shape({}, {"image_processor_type": "GLPNImageProcessor"}) == [None, 3, None, None]


@pytest.mark.parametrize("spec", [PTQSpec(calibration_samples=8),
                                  PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False)],
                         ids=["int8", "weight-only"])
def test_levit_batch_norms_folded_or_rewritten_by_the_stage_are_written_as_the_folder_computes_them(tmp_path, spec):
    """LeViT's patch embedding convolutions are each followed by a batch norm, which both paths fold into them, and
    its MLPs are Linear + BatchNorm1d, which int8 PTQ rewrites as affine maps: the folded norms are written as
    identities plus the folded shift, and the rewritten ones keep the checkpoint's statistics. Neither path had a
    folder before 2026-12-06 ('weight_bias', 'batch_norm_affine_scale': no tensors of the folder's model)."""
    from bench.hf_architecture_sweep import folder_zip, image_npz

    archive = folder_zip("levit", "image-classification", tmp_path)
    result = run_folder_pipeline(archive, image_npz(tmp_path), None, [spec], EvaluationSpec(latency=False),
                                 RunContext(), tmp_path / "work")
    stage = result.stages[0]
    folder = stage.metrics["hf_folder"]
    assert folder["written"], folder
    assert folder["batch_norms_as_identities"] == [f"levit.patch_embeddings.embedding_layer_{index}.batch_norm"
                                                   for index in range(1, 5)]
    assert len(stage.metrics["method_metrics"]["folded_batch_norms"]) == 4
    if spec.activations is None:
        # The folder adds the folded shift after the convolution, the stage inside it: equal up to float rounding,
        # which the CPU's kernels decide (0 on one machine, 4e-7 on another).
        assert folder["relative_difference_to_stage_model"] < 1e-5
    else:  # the int8 patch convolutions are written as their dequantized weights, their inputs run in float
        assert folder["dequantized_convs"] == [f"levit.patch_embeddings.embedding_layer_{index}.convolution"
                                               for index in range(1, 5)]
