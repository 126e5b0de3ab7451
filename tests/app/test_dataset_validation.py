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


def _values_manifest(per_example: int | None = None) -> DatasetManifest:
    labels = {"shape": [3, per_example] if per_example else [3], "dtype": "float32", "values": True}
    arrays = {"x": {"shape": [3, 4], "dtype": "float32"}, "y": labels}
    return DatasetManifest({split: dict(arrays) for split in ("train", "val")},
                           {split: [-0.5, 3.8] for split in ("train", "val")})


def test_values_label_a_regression_model_that_the_job_declares():
    regression = {"output_kind": "regression"}
    validate_job(_job(evaluation=regression), _signature(1), _values_manifest())
    validate_job(_job(evaluation=regression), _signature(3), _values_manifest(3))
    validate_job(_job(evaluation=regression), _signature(1), _manifest([1, 5]))  # ratings 1..5 are values too
    with pytest.raises(InvalidInput, match=r"'train.y' holds values .* evaluation.output_kind is not set: for a "
                                           r"regression model set evaluation.output_kind to 'regression'; for a "
                                           r"classifier .*argmax\(axis=1\)"):
        validate_job(_job(), _signature(3), _values_manifest(3))  # [N, K] values could be soft class targets
    validate_job(_job(), _signature(1), _values_manifest())  # [N] fractional values of one output: regression
    with pytest.raises(InvalidInput, match="evaluation.output_kind is not set"):
        validate_job(_job(), _signature(3), _values_manifest())
    with pytest.raises(InvalidInput, match="evaluation.output_kind is 'logits'"):
        validate_job(_job(evaluation={"output_kind": "logits"}), _signature(1), _values_manifest())
    with pytest.raises(InvalidInput, match=r"gives 1 value\(s\) per example but the regression model's output is "
                                           r"out\[N, 3\] float32"):
        validate_job(_job(evaluation=regression), _signature(3), _values_manifest())
    with pytest.raises(InvalidInput, match="metric 'accuracy' counts classes, but a regression model's labels are "
                                           "values: use 'label_spearman'"):
        validate_job(_job(evaluation=regression | {"metric": "accuracy"}), _signature(1), _values_manifest())
    with pytest.raises(InvalidInput, match="'label_spearman' .* set evaluation.output_kind to 'regression'"):
        validate_job(_job(evaluation={"metric": "label_spearman"}), _signature(1), _manifest([0, 1]))
    validate_job(_job(evaluation=regression | {"metric": "score_spearman"}), _signature(3), _values_manifest(3))


def test_a_class_per_position_labels_a_sequence_output():
    signature = ModelSignature([TensorSpec("x", [None, 6], "int64")], [TensorSpec("out", [None, 6, 4], "float32")], 1)

    def manifest(low: int, high: int, positions: int = 6) -> DatasetManifest:
        arrays = {"x": {"shape": [3, 6], "dtype": "int64"}, "y": {"shape": [3, positions], "dtype": "int64"}}
        return DatasetManifest({split: dict(arrays) for split in ("train", "val")},
                               {split: [low, high] for split in ("train", "val")})

    validate_job(_job(), signature, manifest(-100, 3))
    with pytest.raises(InvalidInput, match=r"ranges over \[0, 4\] but the model gives 4 classes per position: .* "
                                           r"0..3, or -100"):
        validate_job(_job(), signature, manifest(0, 4))
    with pytest.raises(InvalidInput, match="ranges over"):
        validate_job(_job(), signature, manifest(-1, 3))
    with pytest.raises(InvalidInput, match="labels 5 positions per example but the model output .* has 6"):
        validate_job(_job(), signature, manifest(0, 3, positions=5))


def test_a_program_declared_to_output_detections_gives_scores_and_boxes_per_query():
    detections = {"output_kind": "detections"}

    def signature(shape: list) -> ModelSignature:
        return ModelSignature([TensorSpec("x", [None, 4], "float32")], [TensorSpec("out", shape, "float32")], 1)

    validate_job(_job(evaluation=detections), signature([None, 100, 95]), _manifest(None))
    for shape in ([None, 95], [None, 100, 4]):
        with pytest.raises(InvalidInput, match=r"'detections' outputs are \[batch, queries, classes \+ 4\].* but the "
                                               r"model output is out\["):
            validate_job(_job(evaluation=detections), signature(shape), _manifest(None))
    with pytest.raises(InvalidInput, match="judged against the original model's detections .* remove '<split>.y'"):
        validate_job(_job(evaluation=detections), signature([None, 100, 95]), _manifest([0, 1]))
