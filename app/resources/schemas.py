from typing import Annotated, Literal

from fastapi import Query

from app.core.schemas import Stored
from compression.archive.hf_architectures import TASK_ALIASES, TASKS

# The task of a Hugging Face folder upload (POST /v1/models, or completing a resumable model upload).
Task = Annotated[Literal[TASKS + tuple(TASK_ALIASES)]  # transformers' pipeline names too, taken as the task they run
                 | None, Query(
    description="For a Hugging Face folder: what the model is used for; by default inferred from "
                "`architectures` in its config.json (a base image or audio model, such as Dinov2Model or "
                "Wav2Vec2Model, is image- or audio-feature-extraction; T5ForConditionalGeneration, "
                "BartForConditionalGeneration or MarianMTModel is seq2seq-lm, WhisperForConditionalGeneration "
                "speech-seq2seq; a pretrained encoder saved as BertForMaskedLM is feature-extraction, and "
                "fill-mask on request: its masked-LM head judged on tokens the worker masks in the text). "
                "transformers' pipeline names are taken for the task they run (text-classification: "
                "sequence-classification, text-generation: causal-lm, translation and summarization: seq2seq-lm, "
                "automatic-speech-recognition: speech-recognition for a CTC head, speech-seq2seq for Whisper's "
                "kind, ...); the model records the task's own name. Not allowed with a .pt2.")]


class ModelOut(Stored):
    kind: str
    task: str | None = None
    signature: dict

    model_config = {"json_schema_extra": {"examples": [{
        "id": "mdl_3f2a9c1b7d4e5f60", "name": "digits_cnn.pt2", "size_bytes": 61234, "sha256": "9f86d0...",
        "created_at": "2026-11-21T12:00:00Z", "kind": "pt2", "task": None,
        "signature": {"inputs": [{"name": "x", "shape": [None, 1, 8, 8], "dtype": "float32"}],
                      "outputs": [{"name": "linear_1", "shape": [None, 10], "dtype": "float32"}],
                      "parameter_count": 12345, "torch_version": "2.13.0+cpu"}}]}}


class DatasetOut(Stored):
    manifest: dict

    model_config = {"json_schema_extra": {"examples": [{
        "id": "ds_0a1b2c3d4e5f6789", "name": "digits.npz", "size_bytes": 520000, "sha256": "2c26b4...",
        "created_at": "2026-11-21T12:00:00Z",
        "manifest": {"splits": {"train": {"x": {"shape": [1437, 1, 8, 8], "dtype": "float32"},
                                          "y": {"shape": [1437], "dtype": "int64"}},
                                "val": {"x": {"shape": [360, 1, 8, 8], "dtype": "float32"},
                                        "y": {"shape": [360], "dtype": "int64"}}},
                     "label_range": {"train": [0, 9], "val": [0, 9]}}}]}}
