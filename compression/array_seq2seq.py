"""Encoder-decoders that write text for an array, run through the ordinary `.pt2` pipeline as a seq2seq-lm model is
(`compression.seq2seq_lm`), with the audio or image in place of the source text: task speech-seq2seq (Whisper,
Speech2Text, Moonshine, ...: transcription and speech translation) and task image-to-text (a
VisionEncoderDecoderModel: TrOCR's text recognition, Donut, ViT-GPT2's captions).

The program takes the array as the folder's class reads it (Whisper's and Speech2Text's spectrogram
`input_features`, Moonshine's waveform `input_values`, an image's `pixel_values`) and `decoder_input_ids` (the output
so far, behind the decoder's start token), and returns the logits over the vocabulary at every output position. The
`.npz` gives each split's audio or images (one array, as for any audio or image folder) and, where known, its
reference texts (`<split>.transcript`, one string per example: a recording's transcript, an image's text or
caption): their tokens are the labels, read after the prompt generate() feeds the decoder (Whisper's language, task
and no-timestamps tokens, given and not scored), so the job's accuracy is the share of the references' tokens the
model predicts. A split without references is labelled with what the uploaded model itself writes (greedy, its
generation settings applied: Whisper's language and task tokens, not scored), and a compressed model's accuracy is
the share of those tokens it would write too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compression.archive.hf_architectures import DECODER_INPUT, TOO_MANY_TO_TRANSCRIBE
from compression.archive.npz import NOT_INPUTS, TRANSCRIPT_ARRAY
from compression.seq2seq_lm import output_arrays

EXAMPLE_ROWS = 2


class _ArraySeq2SeqLogits(torch.nn.Module):
    """The encoder-decoder with its audio or image input and the decoder's input ids, and one output: the logits at
    every output position (without the key/value cache generation keeps). Holds the model as `model`, so that the
    program's names are the folder's."""

    output = "logits"
    pooling = None

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def run(self, name: str, source: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(**{name: source.to(self.model.dtype)}, decoder_input_ids=decoder_input_ids,
                          use_cache=False, return_dict=True).logits


class _SpectrogramSeq2Seq(_ArraySeq2SeqLogits):
    """Whisper ([batch, mel bins, frames]), Speech2Text ([batch, frames, filter banks])."""

    def forward(self, input_features: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.run("input_features", input_features, decoder_input_ids)


class _WaveformSeq2Seq(_ArraySeq2SeqLogits):
    """Moonshine: the waveform [batch, samples]."""

    def forward(self, input_values: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.run("input_values", input_values, decoder_input_ids)


class _PixelSeq2Seq(_ArraySeq2SeqLogits):
    """A VisionEncoderDecoderModel: the image's pixel values [batch, channels, height, width]."""

    def forward(self, pixel_values: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.run("pixel_values", pixel_values, decoder_input_ids)


WRAPPERS = {"input_features": _SpectrogramSeq2Seq, "input_values": _WaveformSeq2Seq, "pixel_values": _PixelSeq2Seq}


def array_seq2seq_wrapper(model: torch.nn.Module) -> torch.nn.Module:
    """The loaded folder model (AutoModelForSpeechSeq2Seq, AutoModelForImageTextToText) wrapped for its audio or
    image input and the decoder's."""
    wrapper = WRAPPERS.get(model.main_input_name)
    if wrapper is None:
        raise ValueError(f"this {model.config.model_type} model reads '{model.main_input_name}', not one of "
                         f"{sorted(WRAPPERS)}; export it yourself (torch.export.export) and upload the .pt2")
    return wrapper(model).eval()


def array_seq2seq_folder_to_program(folder: Path, task: str, dataset_path: Path, example_split: str,
                                    program_path: Path, job_dataset: Path) -> tuple[torch.Tensor, ...]:
    """Write the folder's model as a `.pt2` exported on the first rows of `example_split`, and the job's `.npz`
    (`job_dataset`): per split the audio or images under the program's input name, `decoder_input_ids` and the
    labels (`compression.seq2seq_lm.output_arrays`); returns the example inputs."""
    from compression.hf_arrays import input_key
    from compression.hf_program import LOCAL_ONLY, load_folder_model, model_program
    from compression.io import save_program

    model = load_folder_model(folder, task)
    source_name = model.model.main_input_name
    with np.load(dataset_path, allow_pickle=False) as arrays:
        sources, targets = {}, {}
        # (a split of transcripts alone feeds no model input)
        for split in sorted({name.partition(".")[0] for name in arrays.files
                             if name.partition(".")[2] not in NOT_INPUTS}):
            sources[split] = {source_name: np.asarray(arrays[input_key(arrays.files, split)], np.float32)}
            transcripts = f"{split}.{TRANSCRIPT_ARRAY}"
            targets[split] = [str(text) for text in arrays[transcripts]] if transcripts in arrays.files else None
    tokenizer = None
    if any(texts is not None for texts in targets.values()):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)
    job_arrays = output_arrays(model.model, tokenizer, targets, sources, TOO_MANY_TO_TRANSCRIBE, prompted=True)
    for split, source in sources.items():
        job_arrays[f"{split}.{source_name}"] = source[source_name]
    example = tuple(torch.from_numpy(job_arrays[f"{example_split}.{name}"][:EXAMPLE_ROWS])
                    for name in (source_name, DECODER_INPUT))
    save_program(model_program(model, example), program_path)
    np.savez(job_dataset, **job_arrays)
    return example

