"""Image and audio models uploaded as Hugging Face folders (tasks `image-classification`: ViT, DeiT, Swin,
ResNet, ConvNeXt, MobileNet, EfficientNet, ...; `audio-classification`: wav2vec2, HuBERT, WavLM, AST, Whisper,
...; `speech-recognition`: the CTC recognizers Wav2Vec2ForCTC, HubertForCTC, ParakeetForCTC, ...; and
`image-feature-extraction` / `audio-feature-extraction`: the base models' features, Dinov2Model, ViTModel,
ConvNextModel, Wav2Vec2Model, HubertModel, ...), run through the ordinary `.pt2` pipeline on an `.npz` of their
input.

The folder's model is exported with its one input (`pixel_values` [batch, channels, height, width]; a waveform's
`input_values` [batch, samples]; AST's and Whisper's spectrogram features) and a dynamic batch, from the dataset's
first rows. For images the `.npz` gives per split either the pixel values the model takes (floats, as the
folder's image processor makes them) or raw uint8 images at the model's size (channels-last as image libraries
give them, or channels-first), which are rescaled and normalized here as the folder's `preprocessor_config.json`
declares (`compression.archive.pixel_scaling`). For a waveform model whose feature extractor normalizes
(`do_normalize`, as wav2vec2's does), each waveform is brought to zero mean and unit variance here as transformers
does; spectrogram features are taken as the feature extractor made them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compression.archive.errors import InvalidUpload
from compression.archive.hf_architectures import (
    IMAGE_MATTING,
    IMAGE_TASKS,
    TRANSCRIPTS_NEED_A_TOKENIZER,
    UNLABELLED_ARRAY_TASKS,
    one_shape_problem,
    unlabelled_task_problem,
)
from compression.archive.hf_folder import (
    CHANNEL_WAVEFORMS,
    SPECTROGRAM_INPUTS,
    HFFolder,
    pixel_input_shape,
    reads_trimap,
)
from compression.archive.npz import LABEL_ARRAY, NOT_INPUTS, TRANSCRIPT_ARRAY, array_headers, array_shapes
from compression.archive.pixel_scaling import (
    CHUNK_ROWS,
    NO_PROCESSOR,
    PIXEL_DTYPE,
    PixelScaling,
    letterboxed_size,
    pixel_layout,
)
from compression.archive.time_series import TIME_SERIES_TASKS, series_input_shape
from compression.matting_pixels import matting_pixels, padded, size_divisor

BLURRED_ROWS = 16  # images blurred at a time: the blur works on float copies, four times the uint8 chunk's bytes

EXAMPLE_ROWS = 2
WAVEFORM_EPSILON = 1e-7  # transformers' zero_mean_unit_var_norm
PCM_SCALE = 32768.0  # 16-bit PCM samples to [-1, 1), as soundfile and torchaudio read them


def _loaded(dataset_path: Path) -> dict[str, np.ndarray]:
    """Every array of the `.npz`, each read once (an NpzFile reads and inflates its member at every access)."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def input_key(files, split: str) -> str:
    """The split's one input array among the `.npz`'s `files` (a single-input model takes it whatever its name, as
    `bind_inputs` does)."""
    names = [name for name in files if name.startswith(f"{split}.") and name.partition(".")[2] not in NOT_INPUTS]
    if len(names) != 1:
        raise InvalidUpload(f"split '{split}' needs exactly one input array besides its labels and transcripts "
                            f"(found {names})")
    return names[0]


def image_dataset(dataset_path: Path, scaling: PixelScaling | None, shape: list[int | None],
                  workdir: Path) -> Path:
    """The `.npz` the job runs on: the upload itself when its images are float pixel values; else a copy in
    `workdir` whose uint8 images are the pixel values `scaling` makes of them (resized and cropped first, as the
    processor does, where they are not at the model's size: `shape`, [batch, channels, height, width]). A video
    model's (`shape` [batch, frames, channels, height, width]) uint8 clips [N, frames, ...] are scaled frame by
    frame, as its video processor does."""
    channels, size = shape[-3], tuple(shape[-2:])
    arrays = _loaded(dataset_path)
    if len(shape) == 5:
        _check_frames(arrays, shape[1])
    raw = [name for name, values in arrays.items() if not name.endswith(f".{LABEL_ARRAY}")
           and values.dtype == np.dtype(PIXEL_DTYPE)]
    if not raw:
        return dataset_path
    if scaling is None:
        raise InvalidUpload(f"'{raw[0]}' {NO_PROCESSOR}")

    def scaled(name: str, images: np.ndarray) -> np.ndarray:
        return scaling.apply(_at_size(name, images, scaling, channels, size), channels)

    converted = {name: (_scaled_frames(name, values, scaled) if len(shape) == 5 else scaled(name, values))
                 if name in raw else values for name, values in arrays.items()}
    path = workdir / "dataset.npz"
    np.savez(path, **converted)
    return path


def matting_dataset(dataset_path: Path, scaling: PixelScaling | None, processor: dict | None,
                    workdir: Path) -> Path:
    """The `.npz` an image matting model's job runs on: uint8 images with their trimaps as the pixel values its
    processor makes (`compression.matting_pixels`), float pixel values as they are; each padded with zeros to the
    processor's size divisor, as the processor pads them."""
    divisor = size_divisor(processor)
    arrays = _loaded(dataset_path)
    inputs = [name for name in arrays if name.partition(".")[2] not in NOT_INPUTS]
    raw = [name for name in inputs if arrays[name].dtype == np.dtype(PIXEL_DTYPE)]
    if raw and scaling is None:
        raise InvalidUpload(f"'{raw[0]}' {NO_PROCESSOR}")
    if not raw and all(arrays[name].shape[-2] % divisor == 0 and arrays[name].shape[-1] % divisor == 0
                       for name in inputs):
        return dataset_path
    converted = {name: matting_pixels(name, values, scaling, divisor) if name in raw
                 else padded(values, divisor) if name in inputs else values for name, values in arrays.items()}
    path = workdir / "dataset.npz"
    np.savez(path, **converted)
    return path


def _check_frames(arrays: dict[str, np.ndarray], frames: int | None) -> None:
    """A video model's position table is built for its config's number of frames: every clip has that many."""
    for name, values in arrays.items():
        if name.partition(".")[2] not in NOT_INPUTS and frames is not None and (
                values.ndim < 4 or values.shape[1] != frames):
            raise InvalidUpload(f"'{name}' has shape {list(values.shape)}, but this video model takes clips of "
                                f"{frames} frames (its config's num_frames), [N, {frames}, H, W, 3]: sample or pad "
                                f"each clip to {frames} frames")


def _scaled_frames(name: str, clips: np.ndarray, scaled) -> np.ndarray:
    """uint8 clips [N, frames, ...] as the pixel values `scaled` makes of each frame, [N, frames, channels, height,
    width]."""
    frames = scaled(name, clips.reshape(clips.shape[0] * clips.shape[1], *clips.shape[2:]))
    return frames.reshape(clips.shape[0], clips.shape[1], *frames.shape[1:])


def _at_size(name: str, pixels: np.ndarray, scaling: PixelScaling, channels: int,
             size: tuple[int | None, int | None]) -> np.ndarray:
    """uint8 images as they are where they have the model's `size` (or it takes any); else resized and
    center-cropped as the processor declares, channels-first, by torch's antialiased interpolation of the uint8
    pixels (the operation torchvision's tensor resize calls)."""
    height, width, order = pixel_layout(list(pixels.shape), channels)
    if None in size:  # a model of any size: the images' own, or where the processor sizes them all, its size
        size = scaling.output_size(height, width) if scaling.resizes_for_any_model_size else None
    if size is None or ((height, width) == size and not scaling.reflect_border):
        return pixels
    if scaling.output_size(height, width) != size:
        raise InvalidUpload(f"'{name}' holds {height}x{width} images, which the folder's processor does not bring "
                            f"to the model's {size[0]}x{size[1]}: resize them before storing them")
    side = max(height, width) if scaling.pad_square else None
    border = scaling.border(height, width)
    resized = scaling.resized_size(height, width) or ((side, side) if side else (height, width))
    rows = BLURRED_ROWS if scaling.blur_resize or scaling.reflect_border else CHUNK_ROWS
    chunks = []
    for start in range(0, len(pixels), rows):
        chunk = torch.from_numpy(np.ascontiguousarray(pixels[start:start + rows]))
        chunk = chunk[:, None] if order == "gray" else chunk.permute(0, 3, 1, 2) if order == "last" else chunk
        if scaling.letterbox:
            chunks.append(_letterboxed(chunk.contiguous(), size, scaling).numpy())
            continue
        if side:  # black (0 before and after the rescale) below and to the right, as OWLv2's processor pads
            chunk = F.pad(chunk, (0, side - width, 0, side - height))
        if scaling.reflect_border:  # ZoeDepth's: borders reflected, then a corner-aligned resize of the floats
            chunk = F.pad(chunk.float(), (border[1], border[1], border[0], border[0]), mode="reflect")
            chunk = F.interpolate(chunk, size=resized, mode=scaling.resample,
                                  align_corners=None if scaling.resample == "nearest" else True)
        elif resized != tuple(chunk.shape[2:]):
            chunk = _blurred_resize(chunk, resized, scaling.resample) if scaling.blur_resize else F.interpolate(
                chunk.contiguous(), size=resized, mode=scaling.resample, antialias=scaling.resample != "nearest")
        top, left = (resized[0] - size[0]) // 2, (resized[1] - size[1]) // 2  # transformers' center crop
        chunks.append(chunk[:, :, top:top + size[0], left:left + size[1]].numpy())
    return np.concatenate(chunks)


def _letterboxed(images: torch.Tensor, size: tuple[int, int], scaling: PixelScaling) -> torch.Tensor:
    """uint8 images [N, C, H, W] as Donut's processor makes them `size`: turned a quarter clockwise where asked and
    their long axis is not the size's, resized within it keeping their aspect (`letterboxed_size`), padded with
    black, centered."""
    height, width = images.shape[2:]
    if scaling.align_long_axis and (size[1] < size[0] and width > height or size[1] > size[0] and width < height):
        images = torch.rot90(images, 3, dims=(2, 3)).contiguous()
        height, width = width, height
    inner = letterboxed_size(height, width, *size)
    if inner != (height, width):
        images = F.interpolate(images, size=inner, mode=scaling.resample, antialias=scaling.resample != "nearest")
    top, left = (size[0] - inner[0]) // 2, (size[1] - inner[1]) // 2
    return F.pad(images, (left, size[1] - inner[1] - left, top, size[0] - inner[0] - top))


def _blurred_resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """float [N, C, *size] of uint8 images [N, C, H, W] resized as OWLv2's fast processor does (scikit-image's
    way): blurred along each axis by a Gaussian of sigma (factor - 1) / 2 (torchvision's kernel: 2 * ceil(3 sigma)
    + 1 taps, reflected edges; no blur at all unless both axes shrink), then interpolated without antialiasing."""
    images = images.float()
    sigmas = [max(0.0, (before / after - 1) / 2) for before, after in zip(images.shape[2:], size)]
    if all(sigma > 0 for sigma in sigmas):
        batch, channels, height, width = images.shape
        planes = images.reshape(batch * channels, 1, height, width)
        for axis, sigma in enumerate(sigmas):
            radius = math.ceil(3 * sigma)
            taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
            kernel = (taps / taps.sum()).reshape((1, 1, -1, 1) if axis == 0 else (1, 1, 1, -1))
            padding = (0, 0, radius, radius) if axis == 0 else (radius, radius, 0, 0)
            planes = F.conv2d(F.pad(planes, padding, mode="reflect"), kernel)
        images = planes.reshape(batch, channels, height, width)
    return F.interpolate(images, size=size, mode=mode, antialias=False)


def prepared_dataset(folder: HFFolder, dataset_path: Path, workdir: Path) -> Path:
    """The `.npz` the folder's job runs on: uint8 images scaled, waveforms normalized as the folder's processor
    says; spectrogram features and pixel values as they are."""
    if folder.task in UNLABELLED_ARRAY_TASKS:
        with np.load(dataset_path, allow_pickle=False) as arrays:
            labels = sorted(name for name in arrays.files if name.endswith(f".{LABEL_ARRAY}"))
            transcripts = sorted(name for name in arrays.files if name.endswith(f".{TRANSCRIPT_ARRAY}"))
        if labels:
            raise InvalidUpload(unlabelled_task_problem(folder.task, labels))
        if transcripts and not folder.has_tokenizer:
            raise InvalidUpload(TRANSCRIPTS_NEED_A_TOKENIZER.format(arrays=transcripts))
    if folder.task in TIME_SERIES_TASKS:
        _check_windows(dataset_path, series_input_shape(folder.config))
        return dataset_path
    if folder.task == IMAGE_MATTING and reads_trimap(folder.config):
        return matting_dataset(dataset_path, folder.pixel_scaling, folder.processor, workdir)
    if folder.task in IMAGE_TASKS:
        return image_dataset(dataset_path, folder.pixel_scaling,
                             pixel_input_shape(folder.task, folder.config, folder.processor), workdir)
    if folder.model_type not in SPECTROGRAM_INPUTS:
        normalized = normalized_waveforms(dataset_path, folder.processor, workdir)
        return with_channel(normalized, workdir) if folder.model_type in CHANNEL_WAVEFORMS else normalized
    return dataset_path


def _check_windows(dataset_path: Path, shape: list[int | None]) -> None:
    """A time-series model reads windows of its config's context length and channel count, as floats: PatchTST's
    patching and position table are built for that length."""
    for name, (array_shape, dtype) in array_headers(dataset_path).items():
        if name.partition(".")[2] in NOT_INPUTS:
            continue
        if len(array_shape) != 3 or any(want is not None and got != want
                                        for got, want in zip(array_shape[1:], shape[1:])):
            raise InvalidUpload(f"'{name}' has shape {list(array_shape)}, but this time-series model reads windows "
                                f"[N, {shape[1] or 'context_length'}, {shape[2] or 'channels'}] (its config's "
                                "context_length and num_input_channels): cut each series into windows of that "
                                "many steps, channels last")
        if dtype.kind != "f":
            raise InvalidUpload(f"'{name}' holds {dtype}; store the series' values as floats")


def with_channel(dataset_path: Path, workdir: Path) -> Path:
    """The `.npz` with each [N, samples] waveform as [N, 1, samples], the input of a model whose feature extractor
    gives waveforms a channel (Omnilingual ASR): the program is exported on the dataset's first rows."""
    arrays = _loaded(dataset_path)
    if not any(_is_waveform(name, values) and values.ndim == 2 for name, values in arrays.items()):
        return dataset_path
    path = workdir / "dataset_channel.npz"
    np.savez(path, **{name: values[:, None] if _is_waveform(name, values) and values.ndim == 2 else values
                      for name, values in arrays.items()})
    return path


def _is_waveform(name: str, values: np.ndarray) -> bool:
    """A split's waveforms: [N, samples], or [N, 1, samples] with the channel a model reads them with."""
    return (not name.endswith(f".{LABEL_ARRAY}") and values.dtype.kind in "fi"
            and (values.ndim == 2 or (values.ndim == 3 and values.shape[1] == 1)))


def normalized_waveforms(dataset_path: Path, processor: dict | None, workdir: Path) -> Path:
    """The `.npz` a waveform model's job runs on: a copy in `workdir` whose 16-bit PCM waveforms (int16, as WAV
    files hold them) are floats in [-1, 1), and whose waveforms are each brought to zero mean and unit variance
    when the folder's feature extractor says `do_normalize` (transformers' `zero_mean_unit_var_norm`); the upload
    itself where neither applies."""
    normalize = isinstance(processor, dict) and bool(processor.get("do_normalize"))
    arrays = _loaded(dataset_path)
    waveforms = [name for name, values in arrays.items() if _is_waveform(name, values)]
    if not normalize and not any(arrays[name].dtype == np.int16 for name in waveforms):
        return dataset_path
    converted = {}
    for name, values in arrays.items():
        if name in waveforms:
            values = values.astype(np.float32) / (PCM_SCALE if values.dtype == np.int16 else 1)
            if normalize:
                values = (values - values.mean(axis=-1, keepdims=True)) / np.sqrt(
                    values.var(axis=-1, keepdims=True) + WAVEFORM_EPSILON)
        converted[name] = values
    path = workdir / "dataset.npz"
    np.savez(path, **converted)
    return path


def check_one_shape(dataset_path: Path, splits: list[str]) -> None:
    """The program is exported at the shape of the dataset's rows, its batch alone dynamic: the job's splits must
    hold inputs of one shape (after the worker's conversions), or the first stage fails on the other one."""
    shapes = array_shapes(dataset_path)  # headers only: the inputs may be gigabytes of audio
    present = [split for split in dict.fromkeys(splits) if any(key.startswith(f"{split}.") for key in shapes)]
    if problem := one_shape_problem({split: [shapes[input_key(shapes, split)][1:]] for split in present}):
        raise InvalidUpload(problem)


def reference_transcripts(dataset_path: Path, split: str, rows: int) -> list[str] | None:
    """The first `rows` of the split's reference transcripts (`<split>.transcript`), None where it has none."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        key = f"{split}.{TRANSCRIPT_ARRAY}"
        return [str(text) for text in arrays[key][:rows]] if key in arrays.files else None


def array_rows(dataset_path: Path, split: str, task: str, rows: int = 8) -> tuple[torch.Tensor, ...]:
    """The first `rows` examples of a split of the job's dataset, as the program's input (float32; a one-channel
    image model's [N, H, W] images get their channel dimension, as the dataset loader gives them)."""
    with np.load(dataset_path, allow_pickle=False) as arrays:
        values = np.asarray(arrays[input_key(arrays.files, split)][:rows], np.float32)
    gray = task in IMAGE_TASKS and values.ndim == 3
    return (torch.from_numpy(values[:, None] if gray else values),)


def array_folder_to_program(folder: Path, task: str, dataset_path: Path, split: str, program_path: Path,
                            prompts: list[str] | None = None) -> tuple[torch.Tensor, ...]:
    """Write the folder's model as a `.pt2` exported on the first rows of `split`; returns those example inputs.
    `prompts`: a zero-shot image classifier's candidate texts."""
    from compression.hf_program import load_folder_model, model_program
    from compression.io import save_program

    example = array_rows(dataset_path, split, task, EXAMPLE_ROWS)
    model = load_folder_model(folder, task, prompts=prompts)
    if hasattr(model, "check_scores"):  # a zero-shot image classifier: its scores as the model's own forward's
        model.check_scores(example)
    if hasattr(model, "without_text_tower"):  # an image-text dual encoder read for its image side
        model.without_text_tower(example)
    save_program(model_program(model, example), program_path)
    return example
