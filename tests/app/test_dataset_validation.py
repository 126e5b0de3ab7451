"""Submission checks of a dataset against a model's signature, called directly (no upload round trip)."""

import pytest

from app.core.errors import InvalidInput
from app.jobs.validation import validate_job
from compression.inspect import DatasetManifest, ModelSignature, TensorSpec
from core.jobs.spec import JobCreate


def _signature(outputs: int) -> ModelSignature:
    return ModelSignature([TensorSpec("x", [None, 4], "float32")], [TensorSpec("out", [None, outputs], "float32")], 1)


def _manifest(labels: list[int] | None, splits=("train", "val")) -> DatasetManifest:
    arrays = {"x": {"shape": [3, 4], "dtype": "float32"}}
    if labels:
        arrays["y"] = {"shape": [3], "dtype": "int64"}
    return DatasetManifest({split: dict(arrays) for split in splits},
                           {split: labels for split in splits} if labels else {})


def _job(**fields) -> JobCreate:
    return JobCreate(model_id="mdl_x", dataset_id="ds_x", stages=[{"method": "ptq"}], **fields)


def test_zero_one_labels_for_a_single_output_model_are_binary_labels():
    validate_job(_job(), _signature(1), _manifest([0, 1]))
    validate_job(_job(), _signature(1), _manifest(None))  # fidelity needs no labels
    validate_job(_job(), _signature(2), _manifest([0, 1]))
    with pytest.raises(InvalidInput, match=r"range over \[0, 2\] but the model has one output .*labels are 0 or 1"):
        validate_job(_job(), _signature(1), _manifest([0, 2]))


def test_a_missing_split_names_the_fields_that_chose_it():
    with pytest.raises(InvalidInput, match=r"split 'val' is not in the dataset \(it has \['test', 'train'\]\); set "
                                           r"evaluation.split to one of these"):
        validate_job(_job(), _signature(2), _manifest([0, 1], ("train", "test")))
    with pytest.raises(InvalidInput, match="set train_split and stages.0.calibration_split to one of these"):
        validate_job(_job(), _signature(2), _manifest([0, 1], ("val",)))
    validate_job(_job(evaluation={"split": "test"}), _signature(2), _manifest([0, 1], ("train", "test")))
