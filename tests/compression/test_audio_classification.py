"""An audio classifier uploaded as a Hugging Face folder (task `audio-classification`: wav2vec2, HuBERT, WavLM on the
waveform; AST and Whisper on spectrogram features) keeps its head, takes the `.npz`'s input (waveforms normalized
as its feature extractor says), and runs every method as a `.pt2` job does."""

import numpy as np
import pytest

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.hf_arrays import normalized_waveforms
from compression.hf_folder_variant import MAX_METRIC_LOSS_POINTS
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import AUDIO_CONFIGS, audio_folder, bert_folder, zip_bytes

CLASSES = 3
# The input each tiny model reads per example, and what it is called.
INPUTS = {"wav2vec2": ("input_values", (1600,)), "audio-spectrogram-transformer": ("input_values", (64, 32)),
          "whisper": ("input_features", (16, 100))}


def _zipped(directory, model_type: str, **options):
    archive = directory / f"{model_type}.zip"
    archive.write_bytes(zip_bytes(audio_folder(directory / model_type, model_type, CLASSES, **options)))
    return archive


def _dataset(path, shape, labels: bool = True):
    """24 examples of `shape`, far from zero mean and unit variance, labelled when asked."""
    values = np.random.default_rng(0).normal(3.0, 5.0, size=(24, *shape)).astype(np.float32)
    arrays = {"train.x": values[:16], "val.x": values[16:]}
    if labels:
        arrays |= {"train.y": np.arange(16) % CLASSES, "val.y": np.arange(8) % CLASSES}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("model_type", list(INPUTS))
def test_the_task_and_the_input_are_read_from_the_folder_and_a_job_runs(model_type, tmp_path):
    archive = _zipped(tmp_path, model_type)
    folder = read_hf_folder(archive)
    name, shape = INPUTS[model_type]
    assert folder.task == "audio-classification"
    # A waveform is any length; a spectrogram model's frames and bins are the config's.
    expected = [None, None] if model_type == "wav2vec2" else [None, *shape]
    assert folder.signature()["inputs"] == [{"name": name, "shape": expected, "dtype": "float32"}]
    assert folder.signature()["outputs"] == [{"name": "logits", "shape": [None, CLASSES], "dtype": "float32"}]
    result = run_folder_pipeline(archive, _dataset(tmp_path / "audio.npz", shape), None,
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["metric"] == "accuracy"
    stage = result.stages[0]
    assert 0 <= stage.metrics["accuracy"] <= 1 and stage.metrics["compression_ratio"] > 1
    # Their convolutions (wav2vec2's feature encoder, AST's patches, Whisper's stem) are int8 in the .pt2; the
    # folder holds them as their dequantized float weights, their inputs in float, and is measured itself.
    folder = stage.metrics["hf_folder"]
    assert folder["written"] and folder["dequantized_convs"], folder
    own = folder["measured_as_its_own_model"]
    assert own["metric_points"] >= stage.metrics["metric_points"] - MAX_METRIC_LOSS_POINTS
    in_float = len(folder["float_activations"])
    assert own["computes"] == f"the stage's model with {in_float} activation quantizers in float"


def test_waveforms_are_normalized_as_the_feature_extractor_says(tmp_path):
    raw = _dataset(tmp_path / "raw.npz", (1600,))
    (tmp_path / "work").mkdir()
    normalized = normalized_waveforms(raw, {"do_normalize": True}, tmp_path / "work")
    with np.load(normalized) as arrays, np.load(raw) as before:
        np.testing.assert_allclose(arrays["val.x"].mean(axis=1), 0, atol=1e-5)
        np.testing.assert_allclose(arrays["val.x"].std(axis=1), 1, atol=1e-4)
        np.testing.assert_array_equal(arrays["val.y"], before["val.y"])  # labels untouched
    assert normalized_waveforms(raw, {"do_normalize": False}, tmp_path / "work") == raw
    assert normalized_waveforms(raw, None, tmp_path / "work") == raw
    # 16-bit PCM, as WAV files hold it: scaled to [-1, 1) whether or not the extractor normalizes.
    pcm = np.array([[-32768, 0, 16384, 32767]], np.int16)
    np.savez(tmp_path / "pcm.npz", **{"val.x": pcm})
    with np.load(normalized_waveforms(tmp_path / "pcm.npz", None, tmp_path / "work")) as arrays:
        np.testing.assert_allclose(arrays["val.x"], [[-1.0, 0.0, 0.5, 32767 / 32768]])
        assert arrays["val.x"].dtype == np.float32


def test_a_checkpoint_without_the_classification_head_is_refused_with_the_way_in(tmp_path):
    """A text model is no audio classifier; a base wav2vec2 (no head) is an audio feature extractor, and as a
    classifier it is told the task it can do; a CTC recognizer is a speech-recognition folder, whose head
    classifies no audio."""
    import json

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    text = tmp_path / "bert.zip"
    text.write_bytes(zip_bytes(bert_folder(tmp_path / "bert", classes=2)))
    with pytest.raises(InvalidUpload, match="transformers has no audio-classification model for model_type 'bert'"):
        read_hf_folder(text, task="audio-classification")
    Wav2Vec2Model(Wav2Vec2Config(**AUDIO_CONFIGS["wav2vec2"])).save_pretrained(tmp_path / "base")
    (tmp_path / "base.zip").write_bytes(zip_bytes(tmp_path / "base"))
    assert read_hf_folder(tmp_path / "base.zip").task == "audio-feature-extraction"  # its features
    with pytest.raises(InvalidUpload, match="the weights were saved for audio-feature-extraction \\(Wav2Vec2Model\\), "
                                            "which has no trained audio-classification head; upload a checkpoint "
                                            "saved for audio-classification or choose task "
                                            "'audio-feature-extraction'"):
        read_hf_folder(tmp_path / "base.zip", task="audio-classification")

    folder = audio_folder(tmp_path / "ctc", "wav2vec2", CLASSES)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["Wav2Vec2ForCTC"]}))
    (tmp_path / "ctc.zip").write_bytes(zip_bytes(folder))
    assert read_hf_folder(tmp_path / "ctc.zip").task == "speech-recognition"
    with pytest.raises(InvalidUpload, match="which has no trained audio-classification head; upload a checkpoint "
                                            "saved for audio-classification or choose task 'speech-recognition'"):
        read_hf_folder(tmp_path / "ctc.zip", task="audio-classification")


def test_batch_norms_folded_into_convolutions_are_written_as_identities(tmp_path):
    """The weight-only path folds each batch norm into the convolution before it (Wav2Vec2-Conformer's depthwise
    convolution, which has no bias): the folder holds the folded weight and writes the norm as the identity plus the
    folded shift. Its folder was refused before 2026-12-06 ('weight_bias' is no tensor of the folder's model)."""
    from bench.hf_architecture_sweep import audio_npz, folder_zip

    archive = folder_zip("wav2vec2-conformer", "audio-classification", tmp_path)
    spec = PTQSpec(weights={"bits": 8}, activations=None, export_onnx=False, selection_samples=16)
    result = run_folder_pipeline(archive, audio_npz(tmp_path, "wav2vec2-conformer"), None, [spec],
                                 EvaluationSpec(latency=False), RunContext(), tmp_path / "work")
    stage = result.stages[0]
    folder = stage.metrics["hf_folder"]
    norms = [f"wav2vec2_conformer.encoder.layers.{index}.conv_module.batch_norm" for index in (0, 1)]
    assert folder["written"] and folder["batch_norms_as_identities"] == norms, folder
    assert folder["relative_difference_to_stage_model"] == 0
    folded = stage.metrics["method_metrics"]["folded_batch_norms"]
    assert {details["batch_norm"] for details in folded.values()} == {f"model.{norm}" for norm in norms}
