"""Time-series heads uploaded as Hugging Face folders (PatchTST, PatchTSMixer, as ibm-granite's checkpoints are
saved): windows of the series in an `.npz`, [N, context_length, channels]; the program gives a classifier's logits,
a regression head's values or the forecast, judged by the labels where the task reads them, else against the
upload's own outputs."""

import json

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import SERIES_CLASSES, series_folder, series_windows, zip_bytes


def _archive(directory, task: str, model_type: str = "patchtst", **sizes):
    archive = directory / f"{model_type}.zip"
    archive.write_bytes(zip_bytes(series_folder(directory / model_type, task, model_type, **sizes)))
    return archive


def _ptq(archive, dataset, workdir):
    return run_folder_pipeline(archive, dataset, None, [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False),
                               RunContext(), workdir)


def _upload_outputs(workdir, dataset, task: str, model_type: str):
    """The program's and the uploaded model's outputs on the first validation windows (taken as they are)."""
    import transformers

    with np.load(dataset) as arrays:
        windows = torch.from_numpy(arrays["val.x"][:4])
    upload = getattr(transformers, SERIES_CLASSES[task][model_type]).from_pretrained(workdir / "source").eval()
    with torch.no_grad():
        return load_program(workdir / "model.pt2").module()(windows), upload(past_values=windows)


@pytest.mark.parametrize("model_type", ["patchtst", "patchtsmixer"])
def test_a_forecaster_is_judged_against_the_uploads_forecasts(tmp_path, model_type):
    archive = _archive(tmp_path, "time-series-forecasting", model_type)
    folder = read_hf_folder(archive)
    assert folder.task == "time-series-forecasting"
    assert folder.signature()["inputs"] == [{"name": "past_values", "shape": [None, 32, 3], "dtype": "float32"}]
    assert folder.signature()["outputs"] == [{"name": "prediction_outputs", "shape": [None, 8, 3],
                                              "dtype": "float32"}]
    dataset = series_windows(tmp_path / "windows.npz")
    result = _ptq(archive, dataset, tmp_path / "work")
    got, upload = _upload_outputs(tmp_path / "work", dataset, "time-series-forecasting", model_type)
    torch.testing.assert_close(got, upload.prediction_outputs)  # the next 8 steps of each of the 3 channels
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("regression", "score_spearman")
    stage = result.stages[0].metrics
    assert stage["metric"] == "score_spearman" and 0 < stage["score_spearman"] <= 1
    assert stage["sqnr_db"] > 10  # int8 of a forecast: the error well below the forecast itself
    assert stage["hf_folder"]["written"], stage["hf_folder"]
    if model_type == "patchtsmixer":  # its gating multiplications read the float activation in the folder
        assert stage["hf_folder"]["float_reads"]


def test_a_classifier_is_judged_by_its_class_labels(tmp_path):
    archive = _archive(tmp_path, "time-series-classification")
    assert read_hf_folder(archive).signature()["outputs"][0] == {"name": "logits", "shape": [None, 3],
                                                                  "dtype": "float32"}
    dataset = series_windows(tmp_path / "windows.npz", labels=lambda rows: np.arange(rows) % 3)
    result = _ptq(archive, dataset, tmp_path / "work")
    got, upload = _upload_outputs(tmp_path / "work", dataset, "time-series-classification", "patchtst")
    torch.testing.assert_close(got, upload.prediction_logits)
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("logits", "accuracy")
    assert 0 <= result.stages[0].metrics["accuracy"] <= 1 and "top1_agreement" in result.stages[0].metrics


def test_a_regression_head_is_judged_by_the_values_it_is_labelled_with(tmp_path):
    archive = _archive(tmp_path, "time-series-regression", "patchtsmixer", targets=2)
    folder = read_hf_folder(archive)
    assert folder.signature()["outputs"][0] == {"name": "regression_outputs", "shape": [None, 2], "dtype": "float32"}
    assert folder.signature()["hf"]["classes"]["regression"]
    values = series_windows(tmp_path / "windows.npz", labels=lambda rows: np.random.default_rng(1).normal(
        size=(rows, 2)).astype(np.float32))
    result = _ptq(archive, values, tmp_path / "work")
    assert (result.baseline["output_kind"], result.baseline["metric"]) == ("regression", "label_spearman")
    assert "label_mse" in result.stages[0].metrics and "score_spearman" in result.stages[0].metrics


def test_windows_of_another_length_or_future_values_are_refused_with_what_to_give(tmp_path):
    archive = _archive(tmp_path, "time-series-forecasting")
    with pytest.raises(InvalidUpload, match=r"reads windows \[N, 32, 3\] \(its config's context_length"):
        _ptq(archive, series_windows(tmp_path / "long.npz", context=48), tmp_path / "long")
    future = series_windows(tmp_path / "future.npz", labels=lambda rows: np.zeros((rows, 8), np.float32))
    with pytest.raises(InvalidUpload, match="future values are not read: remove"):
        _ptq(archive, future, tmp_path / "future")


def test_timesfm_and_distribution_heads_are_refused_at_upload(tmp_path):
    from transformers import TimesFmConfig, TimesFmModelForPrediction

    torch.manual_seed(0)
    TimesFmModelForPrediction(TimesFmConfig(patch_length=8, context_length=32, horizon_length=8, hidden_size=16,
                                            intermediate_size=32, head_dim=8, num_attention_heads=2,
                                            num_hidden_layers=1)).save_pretrained(tmp_path / "timesfm")
    (tmp_path / "timesfm.zip").write_bytes(zip_bytes(tmp_path / "timesfm"))
    with pytest.raises(InvalidUpload, match="loops over it one series at a time"):
        read_hf_folder(tmp_path / "timesfm.zip")
    folder = series_folder(tmp_path / "nll", "time-series-forecasting")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"loss": "nll"}))
    (tmp_path / "nll.zip").write_bytes(zip_bytes(folder))
    with pytest.raises(InvalidUpload, match="gives the parameters of a distribution"):
        read_hf_folder(tmp_path / "nll.zip")
