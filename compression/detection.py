"""Object detectors (task object-detection: DETR and its kin, YOLOS, RT-DETR, D-FINE, ...) judged against the
original model's detections.

The program outputs, for each of the model's object queries, a score per class and a box: [batch, queries,
classes + 4] (output kind 'detections'). The scores are probabilities, what transformers' post-processing reads:
a softmax over the classes and "no object" with "no object" dropped where the classifier has one output more than
the config's classes (DETR, YOLOS, Table Transformer), else a sigmoid per class (Deformable and Conditional DETR,
DAB-DETR, RT-DETR, D-FINE, ...). The box is (centre x, centre y, width, height) relative to the image's size, as
transformers' `pred_boxes` is.

A job's metric, `detection_map`, is the mean average precision (IoU 0.5, COCO's 101-point interpolation) of the
model's detections against the original model's, a mAP whose ground truth is what the upload detects: its (query,
class) pairs scored at least DETECTED_SCORE are the objects (an image with none is a background image, where any
detection is a false one), and each image's MAX_DETECTIONS most confident pairs of the judged model are ranked
against them. Where no image has a detection that confident (a model that was never trained, or scores low), the
threshold is the lowest of the images' best scores instead, for every image alike. The original model scores 100
against itself. Ground-truth boxes are not read: a detection dataset's boxes vary in number from image to image,
which an .npz of arrays does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compression.labels import probability_bce
from compression.specs.metrics import BOX, DETECTIONS_SHAPE

DETECTED_SCORE = 0.5  # transformers' object-detection pipeline's default threshold
MAX_DETECTIONS = 100  # per image, as COCO's evaluation counts
MATCH_IOU = 0.5
BOX_LOSS_WEIGHT = 5.0  # DETR's weight of the L1 box loss against the classification loss


def class_probabilities(logits: torch.Tensor, classes: int) -> torch.Tensor:
    """A detector's class logits [batch, queries, C] as the probability of each of its `classes` (the config's
    num_labels): softmax with the last, "no object", dropped where C is classes + 1, else a sigmoid per class."""
    if logits.shape[-1] == classes + 1:
        return logits.softmax(-1)[..., :-1]
    return logits.sigmoid()


def check_detections(output: torch.Tensor) -> None:
    if output.dim() != 3 or output.shape[-1] <= BOX:
        raise ValueError(f"{DETECTIONS_SHAPE}, but the model's output is {list(output.shape)}")


@dataclass
class _Ranked:
    """One image's most confident (query, class) pairs, best first."""
    scores: torch.Tensor
    classes: torch.Tensor
    boxes: torch.Tensor


def ranked_pairs(detections: torch.Tensor, limit: int = MAX_DETECTIONS) -> _Ranked:
    """The `limit` best-scored (query, class) pairs of one image's detections [queries, classes + 4]."""
    scores, boxes = detections[:, :-BOX], detections[:, -BOX:]
    top = scores.flatten().topk(min(limit, scores.numel()))
    queries = torch.div(top.indices, scores.shape[1], rounding_mode="floor")
    return _Ranked(top.values, top.indices % scores.shape[1], boxes[queries])


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Intersection over union of each of `boxes` [P, 4] with each of `others` [T, 4] (centre x, centre y, width,
    height): [P, T]."""
    def corners(b: torch.Tensor) -> torch.Tensor:
        half = b[:, 2:].clamp_min(0) / 2
        return torch.cat([b[:, :2] - half, b[:, :2] + half], 1)

    a, b = corners(boxes.double()), corners(others.double())
    low, high = torch.maximum(a[:, None, :2], b[None, :, :2]), torch.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = (high - low).clamp_min(0).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1e-12), torch.zeros_like(union))


class DetectionScore:
    """`detection_map` of a model's detections against a reference's, batch by batch; each image's best pairs are
    kept (a few KB) and matched when the result is asked for, when the threshold all images share is known."""

    def __init__(self):
        self.images: list[tuple[_Ranked, _Ranked]] = []

    def add(self, output: torch.Tensor, reference: torch.Tensor) -> None:
        check_detections(output)
        for detections, truth in zip(output.detach().float().cpu(), reference.detach().float().cpu()):
            self.images.append((ranked_pairs(detections), ranked_pairs(truth)))

    def truth_score(self) -> float:
        """DETECTED_SCORE, or where no image has a pair that sure, the lowest of the images' best scores."""
        best = [float(truth.scores[0]) for _, truth in self.images]
        return DETECTED_SCORE if max(best) >= DETECTED_SCORE else min(best)

    def result(self) -> dict:
        if not self.images:
            return {}
        threshold = self.truth_score()
        found: dict[int, list[tuple[float, bool]]] = {}
        objects: dict[int, int] = {}
        for detections, truth in self.images:
            kept = truth.scores >= threshold
            truth_classes, truth_boxes = truth.classes[kept], truth.boxes[kept]
            for label in truth_classes.tolist():
                objects[label] = objects.get(label, 0) + 1
            overlaps = box_iou(detections.boxes, truth_boxes)
            taken = torch.zeros(len(truth_classes), dtype=torch.bool)
            for index in range(len(detections.scores)):  # best first, as COCO's evaluation matches
                label = int(detections.classes[index])
                candidates = torch.where((truth_classes == label) & ~taken, overlaps[index], -1.0)
                best = int(candidates.argmax()) if len(candidates) else -1
                hit = best >= 0 and float(candidates[best]) >= MATCH_IOU
                if hit:
                    taken[best] = True
                found.setdefault(label, []).append((float(detections.scores[index]), hit))
        precisions = [average_precision(found.get(label, []), count) for label, count in objects.items()]
        return {"detection_map": sum(precisions) / len(precisions), "reference_objects": sum(objects.values()),
                "reference_score_threshold": threshold}


def average_precision(detections: list[tuple[float, bool]], objects: int) -> float:
    """COCO's 101-point interpolated average precision of one class's (score, matched) detections over all images,
    against its `objects` count."""
    if not detections or not objects:
        return 0.0
    hits = torch.tensor([hit for _, hit in sorted(detections, key=lambda d: -d[0])], dtype=torch.float64)
    true_positives, false_positives = hits.cumsum(0), (1 - hits).cumsum(0)
    recall = true_positives / objects
    precision = true_positives / (true_positives + false_positives)
    # the best precision at this recall or any higher one (the envelope COCO reads)
    precision = precision.flip(0).cummax(0).values.flip(0)
    points = torch.linspace(0, 1, 101, dtype=torch.float64)
    where = torch.searchsorted(recall, points, side="left")
    reached = where < len(recall)
    return float(torch.where(reached, precision[where.clamp(max=len(recall) - 1)], 0.0).mean())


def detection_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distillation loss of 'detections' outputs: binary cross-entropy of each class's probability against the
    teacher's, plus DETR's weighted L1 distance of the boxes, each query's weighed by how sure the teacher is that
    it holds an object (a query it calls empty has a box nothing reads)."""
    check_detections(student)
    student, teacher = student.float(), teacher.detach().float()
    teacher_scores = teacher[..., :-BOX].clamp(0, 1)
    classification = probability_bce(student[..., :-BOX], teacher_scores)
    confidence = teacher_scores.amax(-1, keepdim=True)
    boxes = ((student[..., -BOX:] - teacher[..., -BOX:]).abs() * confidence).sum() / confidence.sum().clamp_min(1e-6)
    return classification + BOX_LOSS_WEIGHT * boxes / BOX
