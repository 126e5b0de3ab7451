"""Semantic segmentation models (task semantic-segmentation: SegFormer, DPT, BEiT, MobileViT, UperNet) judged against
label masks.

The program outputs class logits at every pixel of the model's output map, channels last ([batch, height, width,
classes]; SegFormer's map is a quarter of the image's size). A dataset's masks (`<split>.y`, [N, H, W] class indices
at the image's size, as ADE20K and Cityscapes ship them) are brought to the map's size by nearest-neighbour sampling,
the label each output pixel covers, and the model's ignore index (config.json `semantic_loss_ignore_index`, 255 by
default) becomes IGNORED_LABEL: then a job's accuracy is the share of labelled pixels whose class the model gets
right, and `mean_iou` (`ClassMapScore`) the mean over classes of intersection over union, the benchmark figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compression.archive.errors import InvalidUpload
from compression.archive.npz import IGNORED_LABEL, LABEL_ARRAY, MASK_IGNORE_INDEX


def masks_for_program(dataset_path: Path, program_path: Path, example: tuple[torch.Tensor, ...], config: dict,
                      workdir: Path) -> Path:
    """`masks_at_output_size` at the size of the map the exported program gives for `example`, for its classes."""
    if not _has_masks(dataset_path):
        return dataset_path
    from compression.io import load_program

    with torch.no_grad():
        output = load_program(program_path).module()(*example)
    return masks_at_output_size(dataset_path, tuple(output.shape[1:3]), output.shape[3],
                                config.get("semantic_loss_ignore_index"), workdir)


def _has_masks(dataset_path: Path) -> bool:
    with np.load(dataset_path, allow_pickle=False) as arrays:
        return any(name.endswith(f".{LABEL_ARRAY}") for name in arrays.files)


def masks_at_output_size(dataset_path: Path, output_size: tuple[int, int], classes: int, ignore_index: int | None,
                         workdir: Path) -> Path:
    """The `.npz` with every split's masks at `output_size` (height, width of the model's output map), the ignore
    index made IGNORED_LABEL; the upload itself where no split has masks. Masks that are not [N, H, W] class
    indices below `classes` are refused with what to store."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        loaded = {name: arrays[name] for name in arrays.files}
    masks = [name for name in loaded if name.endswith(f".{LABEL_ARRAY}")]
    if not masks:
        return dataset_path
    ignore = MASK_IGNORE_INDEX if ignore_index is None else ignore_index
    for name in masks:
        loaded[name] = _sampled(name, loaded[name], output_size, classes, ignore)
    path = workdir / "masks.npz"
    np.savez(path, **loaded)
    return path


def _sampled(name: str, mask: np.ndarray, size: tuple[int, int], classes: int, ignore: int) -> np.ndarray:
    if mask.ndim != 3 or mask.dtype.kind not in "iu":
        raise InvalidUpload(f"'{name}' has shape {list(mask.shape)} and dtype {mask.dtype}: a semantic-segmentation "
                            "job's labels are masks [N, H, W] of class indices, one per pixel of each image")
    labels = torch.from_numpy(mask.astype(np.int64))
    if tuple(labels.shape[1:]) != tuple(size):
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    labels[(labels == ignore) | (labels == IGNORED_LABEL)] = IGNORED_LABEL
    wrong = labels[(labels != IGNORED_LABEL) & ((labels < 0) | (labels >= classes))]
    if len(wrong):
        raise InvalidUpload(f"'{name}' holds class {int(wrong[0])}, but the model has {classes} classes "
                            f"(0..{classes - 1}); mark unlabelled pixels with {ignore} (the model's ignore index)")
    return labels.numpy()


class ClassMapScore:
    """Intersection and union of each class over a split's labelled pixels, batch by batch: `mean_iou`, their
    ratio averaged over the classes that occur in the labels or the predictions."""

    def __init__(self):
        self.intersection: torch.Tensor | None = None
        self.union: torch.Tensor | None = None

    def add(self, output: torch.Tensor, labels: torch.Tensor) -> None:
        classes = output.shape[-1]
        read = labels != IGNORED_LABEL
        predicted, truth = output.argmax(-1)[read], labels[read]
        hits = torch.bincount(truth[predicted == truth], minlength=classes)
        union = torch.bincount(predicted, minlength=classes) + torch.bincount(truth, minlength=classes) - hits
        self.intersection = hits if self.intersection is None else self.intersection + hits
        self.union = union if self.union is None else self.union + union

    def result(self) -> dict:
        if self.union is None:
            return {}
        present = self.union > 0
        return {"mean_iou": float((self.intersection[present] / self.union[present]).mean())} if present.any() else {}


def is_class_map(output: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether labels are a mask per example ([N, H, W]) of a channels-last class map ([N, H, W, classes])."""
    return output.dim() == 4 and labels.dim() == 3 and not labels.is_floating_point()
