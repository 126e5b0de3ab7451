"""Raw images (uint8 pixels) turned into the `pixel_values` an image model of a Hugging Face folder takes, by the
rescaling and normalization its `preprocessor_config.json` declares (transformers' image processors: `do_rescale`
with `rescale_factor`, `do_normalize` with `image_mean` and `image_std`). Torch-free: the API reads it to accept
such arrays at submission, the worker to convert them.

Images already at the size the model takes are used as they are. Images of another size are resized and
center-cropped as the processor declares (`do_resize` with `size` as height and width or as the shortest edge,
`do_center_crop` with `crop_size`, `resample`), by torch's antialiased interpolation of the uint8 pixels, the
operation torchvision's tensor resize calls for transformers' fast image processors (not compared with a
processor's output here: torchvision does not run with this torch build); a PIL-based processor's resampling
differs slightly. A size the processor's steps do not bring to the model's is refused at submission.

DPT's processor (Depth Anything's, ZoeDepth's) may keep the image's aspect ratio (`keep_aspect_ratio`: scaled as
little as possible to reach one side of `size`) and round each side to a multiple (`ensure_multiple_of`): its
output size then depends on the image's, and the model is run at the size the dataset's images are brought to.

OWLv2's processor (`SQUARE_PADDING_FAMILY`) first pads each image with black to a square, bottom and right,
and resizes as scikit-image does: a Gaussian blur of sigma (factor - 1) / 2 per axis, then plain bilinear
interpolation; its fast (torchvision) processor's blur is followed (the PIL one's differs at the edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compression.archive.errors import InvalidUpload

PIXEL_DTYPE = "uint8"
TRANSFORMERS_RESCALE = 1 / 255  # transformers' default rescale_factor
# Why uint8 images cannot be used with a folder whose processor settings are missing, and what to do.
NO_PROCESSOR = ("holds uint8 images, but the model folder has no preprocessor_config.json whose rescale factor, "
                "image_mean and image_std turn them into the model's pixel_values: upload the folder with it, or "
                "store the pixel values (floats, [N, C, H, W]) in the .npz")
# The largest image side a processor or config is read to resize to (8K): larger ones are ignored, and images
# whose resize would pass it are refused, so no upload makes the worker allocate without bound.
MAX_IMAGE_SIDE = 8192
CHUNK_ROWS = 256  # rows converted at a time: the float copy of a chunk, not of the split, is the extra memory
# Processors are told apart by family, their class name without its suffix (`processor_family`): configs saved by
# older transformers name a `feature_extractor_type` (ConvNextFeatureExtractor, as microsoft/resnet-50's).
PROCESSOR_SUFFIXES = ("ImageProcessorFast", "ImageProcessorPil", "ImageProcessor", "FeatureExtractor")
# Families whose `size` given as one number is the shortest edge (transformers' `default_to_square = False`); for
# the others it is a square. DETR's older configs give the longest edge as `max_size`.
SHORTEST_EDGE_FAMILIES = frozenset({
    "Bit", "BridgeTower", "ChineseCLIP", "CLIP", "ConditionalDetr", "ConvNext", "DeformableDetr", "Detr", "Eomt",
    "GroundingDino", "Levit", "Mask2Former", "MaskFormer", "MobileNetV1", "MobileNetV2", "MobileViT", "OneFormer",
    "PoolFormer", "RfDetr", "RTDetr", "Siglip", "TextNet", "Tvp", "VideoMAE", "Vilt", "Yolos"})
# GLPN's processor resizes each side down to a multiple of its `size_divisor` (32 by default).
FLOORING_FAMILY = "GLPN"
# Image processors with no normalize step (a restorer's: Swin2SR rescales to [0, 1] and leaves the mean to its
# model; GLPN's), whose preprocessor_config.json then says nothing of `do_normalize`, transformers' default
# elsewhere.
UNNORMALIZED_FAMILIES = frozenset({"Swin2SR", "GLPN"})
# YOLOS's processor cuts both sides of its resize down to a multiple of 16 (`get_size_with_aspect_ratio_yolos`).
YOLOS_FAMILY = "Yolos"
YOLOS_MULTIPLE = 16
# ZoeDepth's processor, whose `do_pad` (its default) reflects each border before the resize (`PixelScaling.border`).
REFLECTING_FAMILY = "ZoeDepth"
# ConvNeXt's processor (ResNet's too), whose `crop_pct` makes a center crop its config does not name as one.
CROP_PCT_FAMILY = "ConvNext"
# Donut's processor: the shortest edge to the smaller side of `size`, then shrunk to fit within `size` (its
# `do_thumbnail`) and padded with black, centered, to it (its `do_pad`); with `do_align_long_axis`, turned a quarter
# clockwise first where its long axis is not `size`'s. Its `size` as a list is [width, height].
LETTERBOX_FAMILY = "Donut"
# MaskFormer's and Mask2Former's processors round their resize up to a multiple of `size_divisor` (32 by default).
ROUNDING_UP_FAMILIES = frozenset({"MaskFormer", "Mask2Former"})
DEFAULT_SIZE_DIVISOR = 32
# Image processors whose `do_pad` (their default) pads each image to a square before the resize; elsewhere `do_pad`
# pads a batch to its largest image (DETR), which changes nothing for the same-size images of an .npz, or to a size
# divisor (ViTMatte: `compression.matting_pixels`).
SQUARE_PADDING_FAMILY = "Owlv2"


# PixelScaling's processor-specific steps, written to its JSON only where set
PROCESSOR_FLAGS = ("pad_square", "blur_resize", "crop_from_pct", "reflect_border", "letterbox", "align_long_axis")


@dataclass(frozen=True)
class PixelScaling:
    """`rescale`: the factor integer pixels are multiplied by first (None: not rescaled); `mean`, `std`: one value
    per channel subtracted and divided by then (None: not normalized)."""

    rescale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    # The processor's resize: ("exact", height, width), ("shortest", edge[, longest_edge[, multiple]]), DPT's
    # ("fit", height, width, multiple, keep_aspect_ratio), GLPN's ("floor", size_divisor) or None; its center crop
    # (height, width) or None; and how it resamples, as torch's interpolation names it.
    resize: tuple | None = None
    crop: tuple[int, int] | None = None
    resample: str = "bilinear"
    # OWLv2's: pad to a square with black before the resize; resize by a Gaussian blur and plain interpolation
    pad_square: bool = False
    blur_resize: bool = False
    # ConvNeXt's (and ResNet's) `crop_pct`: the shortest edge to `edge / crop_pct`, then the center edge x edge
    # crop (an edge of 384 or more: a resize to edge x edge), a crop its processor_geometry does not declare
    crop_from_pct: bool = False
    # ZoeDepth's: reflect int(sqrt(side / 2) * 3) pixels onto each border before the resize (its `do_pad`), then
    # resize with corners aligned and no antialiasing
    reflect_border: bool = False
    # Donut's: resized within the exact size and padded, centered, to it (`letterboxed_size`); turned first where
    # the long axes differ
    letterbox: bool = False
    align_long_axis: bool = False
    # MaskFormer's: the resize's sides rounded up to a multiple of this (0: not rounded)
    round_up_to: int = 0

    @classmethod
    def from_processor(cls, document: dict | None) -> PixelScaling | None:
        """The scaling a preprocessor_config.json declares; None when there is none or it cannot be read (no
        mean and std although it normalizes), so raw pixels cannot be converted."""
        if not isinstance(document, dict):
            return None
        rescale = None
        if document.get("do_rescale", True):
            factor = document.get("rescale_factor", TRANSFORMERS_RESCALE)
            if not _is_number(factor) or factor <= 0:
                return None
            rescale = float(factor)
        mean = std = None
        family = processor_family(document)
        if document.get("do_normalize", family not in UNNORMALIZED_FAMILIES):
            mean, std = _channel_values(document.get("image_mean")), _channel_values(document.get("image_std"))
            if mean is None or std is None or len(mean) != len(std) or not all(value > 0 for value in std):
                return None
        resize, crop = processor_geometry(document)
        resample = PIL_RESAMPLING.get(document.get("resample"), "bilinear")  # absent: ViTImageProcessor's
        owl = family == SQUARE_PADDING_FAMILY
        pct = document.get("crop_pct", 224 / 256)  # ConvNextImageProcessor's default
        from_pct = (family == CROP_PCT_FAMILY and crop is None
                    and resize is not None and resize[0] == "shortest" and _is_number(pct) and 0 < pct <= 1)
        if from_pct:
            edge = resize[1]
            resize, crop = (("shortest", int(edge / pct)), (edge, edge)) if edge < 384 else (("exact", edge, edge),
                                                                                             None)
        zoe = family == REFLECTING_FAMILY and document.get("do_pad") is not False
        donut = (family == LETTERBOX_FAMILY and resize is not None
                 and resize[0] == "exact" and document.get("do_thumbnail") is not False
                 and document.get("do_pad") is not False)
        return cls(rescale, mean, std, resize, crop, resample, pad_square=owl and document.get("do_pad") is not False,
                   blur_resize=owl, crop_from_pct=from_pct, reflect_border=zoe, letterbox=donut,
                   align_long_axis=donut and document.get("do_align_long_axis") is True,
                   round_up_to=rounding_divisor(document))

    def to_json(self) -> dict:
        flags = {name: True for name in PROCESSOR_FLAGS if getattr(self, name)}  # absent where False
        return {"rescale": self.rescale, "mean": self.mean and list(self.mean), "std": self.std and list(self.std),
                "resize": self.resize and list(self.resize), "crop": self.crop and list(self.crop),
                "resample": self.resample, **flags, **({"round_up_to": self.round_up_to} if self.round_up_to else {})}

    @classmethod
    def from_json(cls, data: dict) -> PixelScaling:
        return cls(data["rescale"], data["mean"] and tuple(data["mean"]), data["std"] and tuple(data["std"]),
                   data.get("resize") and tuple(data["resize"]), data.get("crop") and tuple(data["crop"]),
                   data.get("resample", "bilinear"), **{name: data.get(name, False) for name in PROCESSOR_FLAGS},
                   round_up_to=data.get("round_up_to", 0))

    def border(self, height: int, width: int) -> tuple[int, int]:
        """The rows and columns ZoeDepth's processor reflects onto each border of a height x width image."""
        if not self.reflect_border:
            return 0, 0
        return int(math.sqrt(height / 2) * 3), int(math.sqrt(width / 2) * 3)

    def resized_size(self, height: int, width: int) -> tuple[int, int] | None:
        """(height, width) after the processor's resize, where it has one: exact, or the shortest edge made `edge`
        and the longest scaled alike (transformers' `get_resize_output_image_size`); a square-padding processor's
        resize takes the padded square."""
        if self.pad_square:
            height = width = max(height, width)
        rows, columns = self.border(height, width)
        height, width = height + 2 * rows, width + 2 * columns
        if self.resize is None:
            return None
        if self.resize[0] == "exact":  # Donut's letterbox too: padded to it
            return self.resize[1], self.resize[2]
        if self.resize[0] == "floor":  # GLPN's: each side down to a multiple of its divisor
            size = tuple(side - side % self.resize[1] for side in (height, width))
            return size if 0 < min(size) else None
        if self.resize[0] == "fit":
            size = fitted_size(height, width, *self.resize[1:])
            return size if 0 < min(size) and max(size) <= MAX_IMAGE_SIDE else None
        size = _rounded_up(shortest_edge_size(height, width, *self.resize[1:]), self.round_up_to)
        return size if 0 < min(size) and max(size) <= MAX_IMAGE_SIDE else None  # an extreme aspect ratio

    def output_size(self, height: int, width: int) -> tuple[int, int] | None:
        """(height, width) images of this size end at after the resize and the center crop, or None where the
        processor does neither (or its resize would pass MAX_IMAGE_SIDE)."""
        resized = self.resized_size(height, width)
        if self.resize is not None and resized is None:
            return None
        size = resized or ((max(height, width),) * 2 if self.pad_square else (height, width))
        if self.crop is not None and self.crop[0] <= size[0] and self.crop[1] <= size[1]:
            return self.crop
        return size if self.resize is not None or self.pad_square else None

    @property
    def resizes_for_any_model_size(self) -> bool:
        """Whether images are brought to the processor's output size even for a model that takes any size (what
        its program is then exported at): any processor that resizes (DETR's shortest and longest edge, DPT's kept
        aspect ratio, ConvNeXt's crop_pct) does so to what its model is run on."""
        return self.resize is not None

    def channel_problem(self, channels: int) -> str | None:
        if self.mean is not None and len(self.mean) not in (1, channels):
            return (f"preprocessor_config.json gives {len(self.mean)} image_mean values for a model of {channels} "
                    "channels")
        return None

    def apply(self, pixels: np.ndarray, channels: int) -> np.ndarray:
        """float32 [rows, channels, height, width] from uint8 images [rows, height, width, channels] (as image
        libraries store them), [rows, channels, height, width] or, for one channel, [rows, height, width]."""
        layout = pixel_layout(list(pixels.shape), channels)
        if layout is None:
            raise InvalidUpload(f"images of shape {list(pixels.shape)} are neither [N, H, W, {channels}] nor "
                                f"[N, {channels}, H, W]")
        height, width, order = layout
        out = np.empty((pixels.shape[0], channels, height, width), np.float32)
        for start in range(0, len(pixels), CHUNK_ROWS):
            chunk = pixels[start:start + CHUNK_ROWS].astype(np.float32)
            if order == "gray":
                chunk = chunk[:, None]
            elif order == "last":
                chunk = chunk.transpose(0, 3, 1, 2)
            if self.rescale is not None:
                chunk *= self.rescale
            if self.mean is not None:
                shape = (1, -1, 1, 1)
                chunk = (chunk - np.asarray(self.mean, np.float32).reshape(shape)) / \
                    np.asarray(self.std, np.float32).reshape(shape)
            out[start:start + len(chunk)] = chunk
        return out


def pixel_layout(shape: list[int], channels: int) -> tuple[int, int, str] | None:
    """(height, width, order) of uint8 images of `shape` for a model of `channels` channels, order "last" for
    channels-last (what image libraries give), "first" for channels-first, "gray" for [N, H, W] of a one-channel
    model; None if the shape is none of these. A shape that reads both ways ([N, 3, 3, 3]) is channels-first."""
    if len(shape) == 3 and channels == 1:
        return shape[1], shape[2], "gray"
    if len(shape) != 4:
        return None
    if shape[1] == channels:
        return shape[2], shape[3], "first"
    if shape[3] == channels:
        return shape[1], shape[2], "last"
    return None


# PIL's resampling codes, as processors save them, and the antialiased interpolation torch has for each (LANCZOS,
# BOX and HAMMING have none: bicubic is the closest).
PIL_RESAMPLING = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bicubic", 4: "bilinear", 5: "bilinear"}


NO_SIZE = object()  # a processor that says nothing of size: the config's image_size decides


def processor_geometry(document: dict) -> tuple[tuple | None, tuple[int, int] | None]:
    """The processor's resize (("exact", height, width), ("shortest", edge[, longest_edge[, multiple]]), DPT's
    ("fit", height, width, ensure_multiple_of, keep_aspect_ratio), GLPN's ("floor", size_divisor) or None) and
    center crop ((height, width) or None), as `do_resize`/`size` and `do_center_crop`/`crop_size` declare them."""
    size, family = document.get("size"), processor_family(document)
    if family == LETTERBOX_FAMILY and isinstance(size, list):
        size = size[::-1]  # Donut's [width, height]
    if type(size) is int and family in SHORTEST_EDGE_FAMILIES:
        longest = document.get("max_size")
        size = {"shortest_edge": size, **({"longest_edge": longest} if type(longest) is int else {})}
    resize = _resize(size) if document.get("do_resize", True) else None
    if family == FLOORING_FAMILY and document.get("do_resize", True):
        resize = ("floor", _size_divisor(document)) if _size_divisor(document) else None
    multiple = document.get("ensure_multiple_of")
    multiple = multiple if type(multiple) is int and 1 <= multiple <= MAX_IMAGE_SIDE else 1
    keep_aspect = document.get("keep_aspect_ratio") is True
    if resize is not None and resize[0] == "exact" and (keep_aspect or multiple > 1):
        resize = ("fit", *resize[1:], multiple, keep_aspect)
    if resize is not None and resize[0] == "exact" and family in ROUNDING_UP_FAMILIES and _size_divisor(document):
        resize = ("exact", *_rounded_up(resize[1:], _size_divisor(document)))
    if resize is not None and resize[0] == "shortest" and family == YOLOS_FAMILY:
        resize = ("shortest", resize[1], resize[2] if len(resize) > 2 else None, YOLOS_MULTIPLE)
    crop = side_pair(document.get("crop_size")) if document.get("do_center_crop") else None
    return resize, crop


def processor_family(document: dict) -> str | None:
    """The processor's class name without its suffix ("ConvNext" for ConvNextImageProcessorFast or
    ConvNextFeatureExtractor), from `image_processor_type`, else `feature_extractor_type`; None if neither."""
    name = document.get("image_processor_type") or document.get("feature_extractor_type")
    if not isinstance(name, str):
        return None
    return next((name[:-len(suffix)] for suffix in PROCESSOR_SUFFIXES if name.endswith(suffix)), name)


def rounding_divisor(document: dict) -> int:
    """The multiple a MaskFormer or Mask2Former processor rounds its resize up to (its `size_divisor`); 0 for
    other processors."""
    return _size_divisor(document) if processor_family(document) in ROUNDING_UP_FAMILIES else 0


def _size_divisor(document: dict) -> int:
    """The processor's `size_divisor` (32 where absent, MaskFormer's and GLPN's default), or 0 if it is not one."""
    divisor = document.get("size_divisor", DEFAULT_SIZE_DIVISOR)
    return divisor if type(divisor) is int and 0 < divisor <= MAX_IMAGE_SIDE else 0


def _rounded_up(size, multiple: int) -> tuple[int, ...]:
    return tuple(-(-side // multiple) * multiple if multiple else side for side in size)


def letterboxed_size(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int]:
    """The size Donut's processor gives a height x width image before padding it to the target: its shortest edge
    made the target's smaller side, then, where that passes the target, shrunk to fit (its `thumbnail`)."""
    height, width = shortest_edge_size(height, width, min(target_height, target_width))
    fitted_height, fitted_width = min(height, target_height), min(width, target_width)
    if (fitted_height, fitted_width) == (height, width):
        return height, width
    if height > width:
        return fitted_height, int(width * fitted_height / height)
    if width > height:
        return int(height * fitted_width / width), fitted_width
    return fitted_height, fitted_width


def shortest_edge_size(height: int, width: int, edge: int, longest: int | None = None,
                       multiple: int = 1) -> tuple[int, int]:
    """The size a height x width image is resized to with its shortest side made `edge` and the other scaled alike,
    or, where that would make the longest side pass `longest`, the longest made `longest` instead (transformers'
    `get_size_with_aspect_ratio`, DETR's `{"shortest_edge": 800, "longest_edge": 1333}`); each side then cut down to
    a `multiple` (YOLOS's 16)."""
    if multiple > 1:
        return tuple(side - side % multiple for side in shortest_edge_size(height, width, edge, longest))
    raw = None
    if longest is not None and max(height, width) / min(height, width) * edge > longest:
        raw = longest * min(height, width) / max(height, width)
        edge = int(round(raw))
    if min(height, width) == edge:
        return height, width
    if width < height:
        return int((raw or edge) * height / width), edge
    return edge, int((raw or edge) * width / height)


def fitted_size(height: int, width: int, target_height: int, target_width: int, multiple: int,
                keep_aspect: bool) -> tuple[int, int]:
    """The size DPT's processor resizes a height x width image to (transformers' DPT
    `get_resize_output_image_size`): scaled to the target, or with `keep_aspect` by whichever side's scale is
    closer to 1 on both sides, each side then rounded to a multiple of `multiple`."""
    scale_height, scale_width = target_height / height, target_width / width
    if keep_aspect:
        if abs(1 - scale_width) < abs(1 - scale_height):
            scale_height = scale_width
        else:
            scale_width = scale_height
    return (_to_multiple(scale_height * height, multiple), _to_multiple(scale_width * width, multiple))


def _to_multiple(value: float, multiple: int) -> int:
    return round(value / multiple) * multiple  # Python's rounding, as transformers'; 0 where value < multiple / 2


def processed_size(document: dict):
    """(height, width) the processor's images end at: its center crop, else its exact resize; None where it
    resizes by an edge (any size then), NO_SIZE where it says nothing of size. DINOv2's config says 518 while its
    processor crops 224, what it is run on."""
    resize, crop = processor_geometry(document)
    if crop is not None:
        return crop
    if resize is not None and resize[0] == "exact":
        return resize[1:]
    if resize is not None and resize[0] == "fit":  # kept aspect ratio: any size, the images' decides
        return None if resize[4] else fitted_size(*resize[1:3], *resize[1:])
    if resize is not None and resize[0] == "floor":  # GLPN's: any size, cut to its divisor
        return None
    return None if document.get("do_resize", True) and document.get("size") is not None else NO_SIZE


def _resize(size) -> tuple | None:
    if isinstance(size, dict) and type(size.get("shortest_edge")) is int and "height" not in size:
        longest = size.get("longest_edge")
        longest = (longest,) if type(longest) is int and 0 < longest <= MAX_IMAGE_SIDE else ()
        return ("shortest", size["shortest_edge"], *longest) if 0 < size["shortest_edge"] <= MAX_IMAGE_SIDE else None
    pair = side_pair(size)
    return ("exact", *pair) if pair else None


def side_pair(size) -> tuple[int, int] | None:
    """(height, width) of a size as configs and processors write one (224, [224, 224], {"height", "width"}); None
    for anything else, or sides past MAX_IMAGE_SIDE (an upload's config cannot make the worker allocate them)."""
    if isinstance(size, dict):
        size = [size.get("height"), size.get("width")]
    elif type(size) is int:
        size = [size, size]
    if isinstance(size, list) and len(size) == 2 and all(type(side) is int and 0 < side <= MAX_IMAGE_SIDE
                                                         for side in size):
        return size[0], size[1]
    return None


def _channel_values(value) -> tuple[float, ...] | None:
    if _is_number(value):
        return (float(value),)
    if isinstance(value, list) and value and all(_is_number(item) for item in value):
        return tuple(float(item) for item in value)
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
