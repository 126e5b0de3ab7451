"""The speaker heads of the waveform models, uploaded as Hugging Face folders: a speaker-verification x-vector head
(`Wav2Vec2ForXVector`, task audio-xvector: microsoft/wavlm-base-plus-sv's kind) gives an embedding per recording,
judged against the original's as embeddings are; a frame classifier (`Wav2Vec2ForAudioFrameClassification`, task
audio-frame-classification: diarization, voice activity) gives class logits at every audio frame, judged per frame.
Before 2026-12-07 both were taken for their base model's features and lost their heads."""

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.formats import hf_folder
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import audio_folder, zip_bytes


def _zipped(directory, head: str):
    archive = directory / f"{head}.zip"
    archive.write_bytes(zip_bytes(audio_folder(directory / head, head=head)))
    return archive


def _waveforms(path, labels: np.ndarray | None = None):
    values = np.random.default_rng(0).normal(size=(24, 1600)).astype(np.float32)
    np.savez(path, **{"train.x": values[:16], "val.x": values[16:],
                      **({} if labels is None else {"train.y": labels[:16], "val.y": labels[16:]})})
    return path


def test_an_xvector_head_gives_an_embedding_per_recording_judged_as_embeddings(tmp_path):
    archive = _zipped(tmp_path, "xvector")
    folder = read_hf_folder(archive)
    assert folder.task == "audio-xvector"
    assert folder.signature()["outputs"] == [{"name": "embeddings", "shape": [None, 16], "dtype": "float32"}]
    result = run_folder_pipeline(archive, _waveforms(tmp_path / "audio.npz"), None,
                                 [KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2, "batch_size": 4}),
                                  PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["output_kind"] == "embeddings" and "cosine" in result.stages[-1].metrics
    assert result.stages[0].metrics["method_metrics"]["loss"] in ("cosine", "mse")
    for stage in result.stages:
        assert stage.metrics["hf_folder"]["written"], stage.metrics["hf_folder"]
    [written] = [a for a in result.stages[-1].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    assert type(hf_folder.load(written.path)).__name__ == "Wav2Vec2ForXVector"
    with pytest.raises(InvalidUpload, match="remove .*val.y"):
        run_folder_pipeline(archive, _waveforms(tmp_path / "labelled.npz", np.arange(24) % 3), None,
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work2")


def test_a_frame_classifier_is_judged_per_frame(tmp_path):
    archive = _zipped(tmp_path, "frames")
    folder = read_hf_folder(archive)
    assert folder.task == "audio-frame-classification"
    assert folder.signature()["outputs"] == [{"name": "logits", "shape": [None, None, 3], "dtype": "float32"}]
    result = run_folder_pipeline(archive, _waveforms(tmp_path / "audio.npz"), None, [PTQSpec(calibration_samples=8)],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    assert result.baseline["output_kind"] == "logits" and result.baseline["metric"] == "top1_agreement"
    stage = result.stages[0]
    assert 0 <= stage.metrics["top1_agreement"] <= 1 and stage.metrics["hf_folder"]["written"]
    # per-frame labels, -100 where none applies: judged by accuracy over the labelled frames
    frames = load_program(tmp_path / "work" / "model.pt2").module()(torch.zeros(1, 1600)).shape[1]
    labels = np.arange(24 * frames).reshape(24, frames) % 3
    labels[:, 0] = -100
    labelled = run_folder_pipeline(archive, _waveforms(tmp_path / "labelled.npz", labels), None,
                                   [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                   tmp_path / "work2")
    assert labelled.baseline["metric"] == "accuracy"
    assert round(labelled.stages[0].metrics["accuracy"] * 8 * (frames - 1), 6) % 1 == 0
