"""An object detector (`DetrForObjectDetection`, RT-DETR, YOLOS, ...) uploaded as a Hugging Face folder is read for
its task from `architectures`: the program outputs each object query's class probabilities and box, the job judges
a compressed model by the mean average precision of its detections against the upload's (`detection_map`), and a
forward that takes `len()` of a batch tensor (RT-DETR's) still exports at a dynamic batch."""

import sys

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.detection import class_probabilities
from compression.dry_run import DryRunFailed
from compression.hf_layer_student import write_layers_student
from compression.hf_program import load_folder_model, model_program
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from compression.specs.distill import LayersStudent
from compression.specs.training import TrainingSpec
from tests.hf_folders import detr_folder, rt_detr_folder, zip_bytes


@pytest.fixture(scope="module")
def detr(tmp_path_factory):
    directory = tmp_path_factory.mktemp("detr")
    archive = directory / "detr.zip"
    archive.write_bytes(zip_bytes(detr_folder(directory / "detr")))
    return archive


def _images(path, labels: bool = False):
    rng = np.random.default_rng(0)
    arrays = {f"{split}.x": rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8) for split in ("train", "val")}
    if labels:
        arrays["val.y"] = rng.integers(0, 3, 8)
    np.savez(path, **arrays)
    return path


def test_the_task_is_read_from_the_head_and_the_output_is_scores_and_boxes(detr):
    folder = read_hf_folder(detr)
    assert folder.task == "object-detection"
    signature = folder.signature()
    assert signature["inputs"] == [{"name": "pixel_values", "shape": [None, 3, None, None], "dtype": "float32"}]
    # three classes' probabilities (DETR's "no object" dropped), then the box
    assert signature["outputs"] == [{"name": "detections", "shape": [None, None, 7], "dtype": "float32"}]
    assert signature["hf"]["classes"]["names"] == ["cat", "dog", "bird"]


def test_a_detection_job_judges_the_map_against_the_uploads_detections(detr, tmp_path):
    from transformers import DetrForObjectDetection

    result = run_folder_pipeline(detr, _images(tmp_path / "images.npz"), None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    baseline, stage = result.baseline, result.stages[0].metrics
    assert baseline["output_kind"] == "detections" and baseline["metric"] == "detection_map"
    assert baseline["metric_points"] == pytest.approx(100.0) and baseline["reference_objects"] >= 8
    assert stage["metric"] == "detection_map" and 50 < stage["metric_points"] <= 100 and stage["sqnr_db"] > 10
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        pixels = torch.from_numpy(arrays["val.x"][:2])
    upload = DetrForObjectDetection.from_pretrained(tmp_path / "work" / "source").eval()
    with torch.no_grad():
        output = upload(pixel_values=pixels)
        got = load_program(tmp_path / "work" / "model.pt2").module()(pixels)
    expected = torch.cat([class_probabilities(output.logits, 3), output.pred_boxes], -1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_distilling_a_detector_trains_on_its_scores_and_boxes(detr, tmp_path):
    student = {"kind": "low_rank", "rank": 8}
    result = run_folder_pipeline(detr, _images(tmp_path / "images.npz"), None,
                                 [KDSpec(student=student, training=TrainingSpec(steps=4, batch_size=4))],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage = result.stages[0].metrics
    method = stage["method_metrics"]
    assert stage["metric"] == "detection_map" and method["loss"] == "detection"
    assert method["student_fidelity"]["metric"] == "detection_map" and 0 <= method["student_fidelity"]["after"] <= 100
    # a class-logit KL would read the boxes as classes: refused by the dry run, before any training
    with pytest.raises(DryRunFailed, match="'detection' loss fits 'detections' outputs .* the loss 'kl'"):
        run_folder_pipeline(detr, tmp_path / "images.npz", None,
                            [KDSpec(student=student, loss="kl", training=TrainingSpec(steps=4, batch_size=4))],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "kl")


def test_labels_and_other_output_kinds_are_refused_with_what_the_job_measures(detr, tmp_path):
    with pytest.raises(InvalidUpload, match=r"an object-detection job compares .* remove \['val.y'\]"):
        run_folder_pipeline(detr, _images(tmp_path / "labelled.npz", labels=True), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")


def test_rt_detr_takes_len_of_its_batch_and_still_exports_at_a_dynamic_batch(tmp_path):
    model = load_folder_model(rt_detr_folder(tmp_path / "rt_detr"), "object-detection")
    modeling = sys.modules[type(model.model).__module__]
    program = model_program(model, (torch.rand(2, 3, 64, 64),)).module()
    for batch in (1, 3):
        images = torch.rand(batch, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(program(images), model(images), atol=1e-5, rtol=1e-4)
    assert "len" not in vars(modeling)  # the export's `len` is gone from transformers' module again


def test_a_layers_student_of_a_detector_keeps_decoder_layers_with_their_heads(tmp_path):
    from transformers import RTDetrForObjectDetection

    source = rt_detr_folder(tmp_path / "rt_detr")
    details = write_layers_student(source, "object-detection", LayersStudent(keep=1), tmp_path / "student")
    assert details["layers"] == [1] and details["teacher_layers"] == 2
    assert details["layer_list"] == "model.decoder.layers, model.decoder.class_embed, model.decoder.bbox_embed"
    teacher = RTDetrForObjectDetection.from_pretrained(source)
    student = RTDetrForObjectDetection.from_pretrained(tmp_path / "student")
    assert student.config.decoder_layers == 1 and len(student.model.decoder.layers) == 1
    # the kept layer comes with the class and box heads RT-DETR reads its detections with
    torch.testing.assert_close(student.model.decoder.class_embed[0].weight, teacher.model.decoder.class_embed[1].weight)
    torch.testing.assert_close(student.model.decoder.layers[0].mlp.fc1.weight,
                               teacher.model.decoder.layers[1].mlp.fc1.weight)
