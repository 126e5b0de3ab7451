"""`compression.detection`: how a detector's outputs are scored (mAP against the reference's detections) and
distilled."""

import pytest
import torch

from compression.detection import (
    DetectionScore,
    average_precision,
    box_iou,
    class_probabilities,
    detection_loss,
)
from compression.fidelity import Fidelity
from compression.specs.metrics import DETECTIONS_READ_NO_LABELS, chosen_metric, metric_problem


def _detections(scores: list[list[float]], boxes: list[list[float]]) -> torch.Tensor:
    """One image's [queries, classes + 4] from each query's class scores and box."""
    return torch.cat([torch.tensor(scores), torch.tensor(boxes)], -1)


def test_class_probabilities_drop_the_no_object_class_or_read_each_class_on_its_own():
    logits = torch.tensor([[[2.0, 0.0, 1.0, 3.0]]])
    with_no_object = class_probabilities(logits, classes=3)  # DETR: softmax over 3 classes + "no object"
    torch.testing.assert_close(with_no_object, logits.softmax(-1)[..., :3])
    torch.testing.assert_close(class_probabilities(logits, classes=4), logits.sigmoid())  # RT-DETR: a sigmoid each


def test_box_iou_of_centre_boxes():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    others = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]])
    torch.testing.assert_close(box_iou(boxes, others), torch.tensor([[1.0, 1 / 3, 0.0]], dtype=torch.float64))


def test_average_precision_reads_the_ranked_hits():
    assert average_precision([(0.9, True), (0.8, True)], objects=2) == pytest.approx(1.0)
    # one of two objects found, first: precision 1 up to recall 0.5, nothing beyond
    assert average_precision([(0.9, True), (0.3, False)], objects=2) == pytest.approx(51 / 101)
    # a miss ranked above the hit halves the precision at every recall it reaches
    assert average_precision([(0.9, False), (0.8, True)], objects=1) == pytest.approx(0.5)
    assert average_precision([], objects=3) == 0.0


def test_the_reference_scores_100_against_itself_and_a_moved_box_or_class_loses():
    image = _detections([[0.9, 0.05], [0.1, 0.8], [0.2, 0.3]],
                        [[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]])
    reference = torch.stack([image, image.flip(0)])

    def score(output):
        detections = DetectionScore()
        detections.add(output, reference)
        return detections.result()

    same = score(reference)
    assert same["detection_map"] == pytest.approx(1.0) and same["reference_objects"] == 4
    assert same["reference_score_threshold"] == 0.5
    moved = reference.clone()
    moved[0, 0, -4:] = torch.tensor([0.8, 0.2, 0.2, 0.2])  # the cat's box elsewhere
    swapped = reference.clone()
    swapped[0, 1, :2] = torch.tensor([0.8, 0.1])  # the dog called a cat
    assert score(moved)["detection_map"] < 1.0 and score(swapped)["detection_map"] < 1.0
    # a slightly shifted box and a changed score that keeps the ranking still match
    close = reference.clone()
    close[:, :, -4:] += 0.01
    close[:, :, :2] *= 0.99
    assert score(close)["detection_map"] == pytest.approx(1.0)


def test_an_image_without_confident_detections_is_background_unless_no_image_has_any():
    unsure = _detections([[0.3, 0.1], [0.2, 0.25]], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    sure = _detections([[0.9, 0.1], [0.28, 0.1]], [[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])

    def result(*images):
        reference = torch.stack(images)
        detections = DetectionScore()
        detections.add(reference, reference)
        return detections.result()

    # the sure image's cat alone is an object: the unsure image is background
    mixed = result(unsure, sure)
    assert mixed["reference_score_threshold"] == 0.5 and mixed["reference_objects"] == 1
    assert mixed["detection_map"] == pytest.approx(1.0)
    # nothing scored 0.5 anywhere (the second image's cats scaled to 0.279 and 0.087): the lowest best score, 0.279,
    # is the threshold, so each image holds its best (and the first image's 0.25 dog is no object)
    lows = result(unsure, sure * torch.tensor([0.31, 1, 1, 1, 1, 1]))
    assert lows["reference_score_threshold"] == pytest.approx(0.279) and lows["reference_objects"] == 2
    assert lows["detection_map"] == pytest.approx(1.0)


def test_outputs_that_are_not_detections_are_refused():
    with pytest.raises(ValueError, match=r"\[batch, queries, classes \+ 4\].*\[2, 4\]"):
        DetectionScore().add(torch.zeros(2, 4), torch.zeros(2, 4))


def test_fidelity_of_detections_is_their_map_and_the_job_metric_defaults_to_it():
    reference = torch.rand(3, 5, 6)
    fidelity = Fidelity("detections")
    fidelity.add(reference, reference)
    metrics = fidelity.result()
    assert metrics["detection_map"] == pytest.approx(1.0) and metrics["cosine"] == pytest.approx(1.0)
    assert chosen_metric(None, "detections", has_labels=False) == "detection_map"
    assert metric_problem(None, "detections", has_labels=True) == DETECTIONS_READ_NO_LABELS
    assert "does not apply" in metric_problem("detection_map", "logits", has_labels=False)


def test_the_detection_loss_pulls_scores_and_the_boxes_of_held_objects_toward_the_teacher():
    teacher = torch.cat([torch.tensor([[[0.9, 0.0], [0.0, 0.0]]]), torch.full((1, 2, 4), 0.5)], -1)
    student = teacher.clone().requires_grad_()
    with torch.no_grad():
        student[0, :, -4:] += 0.2
        student[0, 0, 0] = 0.5
    loss = detection_loss(student, teacher)
    loss.backward()
    assert loss > detection_loss(teacher, teacher)
    assert student.grad[0, 0, 0] < 0  # the held object's score rises toward 0.9
    assert (student.grad[0, 0, -4:] > 0).all()  # its box moves back
    assert (student.grad[0, 1, -4:] == 0).all()  # an empty query's box is not read
