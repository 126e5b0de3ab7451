"""A `.jsonl`'s labels by class index, by class name (mapped with the model's config.json id2label) or as lists of
the classes that apply (multi-label), read, described in the manifest, and turned into the arrays the model is
scored with."""

import io

import numpy as np
import pytest

from compression.archive import InvalidUpload
from compression.archive.jsonl import manifest_splits, read_jsonl
from compression.text_labels import ModelClasses, label_array, label_problems, name_indices
from tests.hf_folders import CORPUS, bert_folder, kd_and_ptq_job, zip_bytes

SENTIMENT = ["NEGATIVE", "neutral", "Positive"]


def _read(text: str):
    return read_jsonl(io.BytesIO(text.encode()), keep_text=True)


def test_names_and_lists_are_read_and_described():
    splits = _read('{"split": "train", "text": "a", "label": "pos"}\n{"split": "train", "text": "b", "label": "neg"}\n'
                   '{"split": "val", "text": "c", "label": "pos"}\n')
    assert splits["train"].labels == ["pos", "neg"] and splits["train"].names == {"pos", "neg"}
    described, label_range = manifest_splits(splits)
    assert described["train"]["y"] == {"shape": [2], "dtype": "str", "names": ["neg", "pos"]}
    assert label_range == {}
    lists = _read('{"split": "train", "text": "a", "label": [3, 1, 3]}\n{"split": "train", "text": "b", "label": []}\n'
                  '{"split": "train", "text": "c", "label": [0.0]}\n')
    assert lists["train"].labels == [[3, 1], [], [0]] and lists["train"].multi_label
    described, label_range = manifest_splits(lists)
    assert described["train"]["y"] == {"shape": [3], "dtype": "int64", "multi_label": True}
    assert label_range == {"train": [0, 3]}


def test_names_match_exactly_or_ignoring_case_when_that_is_one_class():
    found, unknown = name_indices({"negative", "Positive", "NEUTRAL", "joy"}, SENTIMENT)
    assert found == {"negative": 0, "NEUTRAL": 1, "Positive": 2} and unknown == ["joy"]
    # Two classes equal ignoring case: only an exact match picks one.
    assert name_indices({"a", "A", "b"}, ["a", "A", "c"]) == ({"a": 0, "A": 1}, ["b"])
    # Digits that are no class's name are its index (a CSV column of indices written as strings); a name first.
    assert name_indices({"2", "3", "1"}, SENTIMENT) == ({"1": 1, "2": 2}, ["3"])
    assert name_indices({"1"}, ["x", "0", "1"]) == ({"1": 2}, [])


def test_lists_of_0_1_flags_one_per_class_are_read_as_the_classes_they_flag():
    # [0, 1, 1] as class indices would be classes 0 and 1; a repeated 0/1 value marks the file's lists as flags.
    rows = _read('{"split": "t", "text": "a", "label": [0, 1]}\n{"split": "t", "text": "b", "label": [1, 1]}\n'
                 '{"split": "v", "text": "c", "label": [0, 0]}')
    assert rows["t"].labels == [[1], [0, 1]] and rows["v"].labels == [[]]
    assert rows["t"].flag_width == 2
    described, label_range = manifest_splits(rows)
    assert described["t"]["y"]["flag_width"] == 2 and label_range == {"t": [0, 1]}
    three = _read('{"split": "t", "text": "a", "label": [0, 1, 1]}')["t"]
    assert three.labels == [[1, 2]]
    assert "gives each row 3 0/1 flags, one per class, but the model has 4 classes" in label_problems(
        "split 't'", [], True, [1, 2], ModelClasses(4, None, True), three.flag_width)[0]
    np.testing.assert_array_equal(label_array("t", three, ModelClasses(3, None, True)), [[0, 1, 1]])
    # Class lists keep meaning indices, a class listed twice counting once.
    assert _read('{"split": "t", "text": "a", "label": [2, 0, 2]}')["t"].labels == [[2, 0]]
    with pytest.raises(InvalidUpload, match=r"mix 0/1 flag vectors.*\(lengths \[2, 3\]\)"):
        _read('{"split": "t", "text": "a", "label": [1, 1]}\n{"split": "t", "text": "b", "label": [0, 1, 0]}')
    # Lists of one length, some flags and some not, can only be a regression head's values: the model decides.
    mixed = _read('{"split": "t", "text": "a", "label": [0, 0, 1]}\n{"split": "t", "text": "b", "label": [2, 1, 0]}')
    assert manifest_splits(mixed)[0]["t"]["y"]["mixed_lists"] is True
    with pytest.raises(InvalidUpload, match="mix 0/1 flag vectors"):
        label_array("t", mixed["t"], ModelClasses(3, None, True))


def test_booleans_are_classes_0_and_1_as_in_an_npz():
    rows = _read('{"split": "t", "text": "a", "label": true}\n{"split": "t", "text": "b", "label": false}')["t"]
    assert rows.labels == [1, 0] and not rows.names


def test_label_arrays_for_a_classifier():
    classes = ModelClasses(3, SENTIMENT, multi_label=False)
    rows = _read('{"split": "t", "text": "a", "label": "positive"}\n{"split": "t", "text": "b", "label": "NEGATIVE"}')
    np.testing.assert_array_equal(label_array("t", rows["t"], classes), np.array([2, 0]))
    with pytest.raises(InvalidUpload, match=r"does not have: 'joy'; .* 'NEGATIVE', 'neutral', 'Positive'"):
        label_array("t", _read('{"split": "t", "text": "a", "label": "joy"}')["t"], classes)
    lists = _read('{"split": "t", "text": "a", "label": ["neutral", "positive"]}\n{"split": "t", "text": "b", '
                  '"label": []}')["t"]
    with pytest.raises(InvalidUpload, match="problem_type is not 'multi_label_classification'"):
        label_array("t", lists, classes)
    matrix = label_array("t", lists, ModelClasses(3, SENTIMENT, multi_label=True))
    assert matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, [[0, 1, 1], [0, 0, 0]])
    index_lists = _read('{"split": "t", "text": "a", "label": [0, 2]}\n{"split": "t", "text": "b", "label": []}')["t"]
    with pytest.raises(InvalidUpload, match="multi-label rows for 300,000,000 classes: a 0/1 label matrix of"):
        label_array("t", index_lists, ModelClasses(300_000_000, None, True))  # refused before allocating it
    with pytest.raises(InvalidUpload, match=r"class indices over \[0, 3\] but the model has 3 classes"):
        label_array("t", _read('{"split": "t", "text": "a", "label": [0, 3]}')["t"], ModelClasses(3, None, True))


def test_names_need_a_model_whose_output_is_named_classes():
    def problems(names, classes: ModelClasses, index_range=None) -> str:
        return "; ".join(label_problems("split 't'", names, False, index_range, classes))

    assert "output is not classes" in problems(["pos"], ModelClasses(None, None, False))
    assert "does not name its classes" in problems(["pos"], ModelClasses(2, None, False))
    assert problems([], ModelClasses(None, None, False), [0, 1]) == ""


def _kd_and_ptq(tmp_path, folder, labels: list, alpha: float):
    """`kd_and_ptq_job` on 8 train and 8 val rows of CORPUS labelled with `labels`, in turn."""
    rows = [{"split": split, "text": text, "label": labels[index % len(labels)]}
            for split, texts in (("train", CORPUS[:8]), ("val", CORPUS[8:16])) for index, text in enumerate(texts)]
    archive = tmp_path / "folder.zip"
    archive.write_bytes(zip_bytes(folder))
    return kd_and_ptq_job(archive, rows, "sequence-classification", tmp_path, alpha)


def test_a_multi_label_folder_job_runs_on_lists_of_class_names(tmp_path):
    """The worker's path: the folder's names map the lists to a 0/1 matrix, which the job scores as independent
    labels (accuracy over every label) and distils as such."""
    folder = bert_folder(tmp_path / "bert", 3, id2label=dict(enumerate(SENTIMENT)),
                         problem_type="multi_label_classification")
    choices = [["negative"], ["Positive", "neutral"], [], ["POSITIVE"]]
    result = _kd_and_ptq(tmp_path, folder, choices, alpha=0.0)
    # The label matrix makes the job multi-label: distillation matches the logits label by label.
    assert result.stages[0].metrics["method_metrics"]["loss"] == "bce_logits", result.stages[0].metrics
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        np.testing.assert_array_equal(arrays["train.y"][:4], [[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 1]])
    # Independent labels are scored element by element: a multiple of 1/24 of the 8 x 3 labels, not of 1/8 rows.
    for metrics in (result.baseline, *(stage.metrics for stage in result.stages)):
        assert round(metrics["accuracy"] * 24, 6) % 1 == 0, metrics["accuracy"]


def test_numbers_that_are_no_class_index_are_regression_values():
    splits = _read('{"split": "train", "text": "a", "label": 3.8}\n{"split": "train", "text": "b", "label": 1}\n'
                   '{"split": "val", "text": "c", "label": 2}\n{"split": "val", "text": "d", "label": -0.5}\n')
    assert splits["train"].values and splits["val"].values  # one form per file: the whole numbers are values too
    described, label_range = manifest_splits(splits)
    assert described["train"]["y"] == {"shape": [2], "dtype": "float32", "values": True}
    assert label_range == {"train": [1.0, 3.8], "val": [-0.5, 2.0]}
    regression = ModelClasses(1, None, False, regression=True)
    array = label_array("train", splits["train"], regression)
    assert array.dtype == np.float32 and array.tolist() == pytest.approx([3.8, 1.0])
    ratings = _read('{"split": "t", "text": "a", "label": 5}\n{"split": "t", "text": "b", "label": 1}')["t"]
    assert label_array("t", ratings, regression).tolist() == [5.0, 1.0]  # a regression head's ratings are values
    assert label_array("t", splits["train"], ModelClasses(1, None, False)).dtype == np.float32  # one label: values
    with pytest.raises(InvalidUpload, match="values .* but the model is a classifier with 3 classes"):
        label_array("train", splits["train"], ModelClasses(3, SENTIMENT, False))
    with pytest.raises(InvalidUpload, match="model's output is not a sequence classifier's"):
        label_array("train", splits["train"], ModelClasses(None, None, False))
    names = _read('{"split": "t", "text": "a", "label": "high"}')["t"]
    with pytest.raises(InvalidUpload, match="gives class names, but the model is a regression head"):
        label_array("t", names, regression)
    with pytest.raises(InvalidUpload, match="one value per row, but the regression head predicts 2 values"):
        label_array("train", splits["train"], ModelClasses(2, None, False, regression=True))


def test_a_regression_folder_job_trains_and_judges_its_values(tmp_path):
    """A cross-encoder regression head (STS-B's form: problem_type 'regression', one label) on similarity
    scores: the values are its labels, distilled and fine-tuned with MSE and judged by their rank correlation."""
    folder = bert_folder(tmp_path / "sts", 1, problem_type="regression")
    scores = [0.4, 3.8, 2.25, 4.9, 1.0, 2.75, 0.0, 5.0]
    result = _kd_and_ptq(tmp_path, folder, scores, alpha=0.5)
    assert result.stages[0].metrics["method_metrics"]["loss"] == "mse"
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        assert arrays["train.y"].dtype == np.float32 and arrays["train.y"].tolist() == pytest.approx(scores)
    for metrics in (result.baseline, *(stage.metrics for stage in result.stages)):
        assert metrics["output_kind"] == "regression" and metrics["metric"] == "label_spearman"
        assert -1 <= metrics["label_spearman"] <= 1 and "accuracy" not in metrics


def test_lists_of_values_label_a_regression_head_with_as_many_outputs():
    """A head with K outputs (problem_type 'regression', num_labels K) is labelled with a list of K numbers per
    row: [N, K] values. Lists of whole numbers read as class lists for a classifier and as values for such a head
    (kept as written: repeats and 0/1 patterns are values, not flags); lists of other lengths are refused."""
    splits = _read('{"split": "t", "text": "a", "label": [0.5, 2]}\n{"split": "t", "text": "b", "label": [1, -3]}\n'
                   '{"split": "v", "text": "c", "label": [4, 1]}\n')
    described, label_range = manifest_splits(splits)
    assert described["t"]["y"] == {"shape": [2, 2], "dtype": "float32", "values": True}
    assert label_range == {"t": [-3.0, 2.0], "v": [1.0, 4.0]}
    two_outputs = ModelClasses(2, None, False, regression=True)
    assert label_array("t", splits["t"], two_outputs).tolist() == [[0.5, 2.0], [1.0, -3.0]]
    with pytest.raises(InvalidUpload, match="gives 2 values per row, but the regression head predicts 3 values: "
                                            "label each row with a list of the 3 numbers"):
        label_array("t", splits["t"], ModelClasses(3, None, False, regression=True))
    with pytest.raises(InvalidUpload, match="but the model is a classifier with 2 classes"):
        label_array("t", splits["t"], ModelClasses(2, None, False))
    whole = _read('{"split": "t", "text": "a", "label": [0, 2, 2]}\n{"split": "t", "text": "b", "label": [1, 1, 0]}')
    assert manifest_splits(whole)[0]["t"]["y"]["mixed_lists"] is True  # neither flags nor class lists
    three_outputs = ModelClasses(3, None, False, regression=True)
    assert label_array("t", whole["t"], three_outputs).tolist() == [[0, 2, 2], [1, 1, 0]]
    ratings = _read('{"split": "t", "text": "a", "label": [5, 2]}\n{"split": "t", "text": "b", "label": [3, 4]}')
    assert manifest_splits(ratings)[0]["t"]["y"] == {"shape": [2], "dtype": "int64", "multi_label": True,
                                                    "list_width": 2}
    assert label_array("t", ratings["t"], two_outputs).tolist() == [[5, 2], [3, 4]]
    with pytest.raises(InvalidUpload, match="gives 2 values per row, but the regression head predicts 1 value: "
                                            "label each row with the number it should predict"):
        label_array("t", ratings["t"], ModelClasses(1, None, False, regression=True))
    uneven = '{"split": "t", "text": "a", "label": [0.5, 2]}\n{"split": "t", "text": "b", "label": [1]}'
    with pytest.raises(InvalidUpload, match=r"lists hold values .* but their lengths differ \(\[1, 2\]\)"):
        _read(uneven)
    assert label_problems("split 't'", [], True, [1, 5], three_outputs, value_width=None) == [
        "split 't' gives lists of several lengths, but the regression head predicts 3 values: label each row with "
        "a list of the 3 numbers it should predict"]
    with pytest.raises(InvalidUpload, match="got -1.5"):  # a word's tag is a class, never a value
        _read('{"split": "t", "text": "a", "tags": [-1.5]}')


def test_a_regression_folder_with_several_outputs_trains_and_judges_each(tmp_path):
    """A head with two regression outputs (valence and arousal, say) on lists of two values: [N, 2] labels,
    distilled and fine-tuned with MSE and judged by the rank correlation of each output, averaged."""
    folder = bert_folder(tmp_path / "va", 2, problem_type="regression")
    values = [[0.4, -1.0], [3.8, 2.5], [2.25, 0.0], [4.9, 1.5], [1.0, -0.5], [2.75, 3.0], [0.0, 1.0], [5.0, -2.0]]
    result = _kd_and_ptq(tmp_path, folder, values, alpha=0.5)
    assert result.stages[0].metrics["method_metrics"]["loss"] == "mse"
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        assert arrays["train.y"].dtype == np.float32
        np.testing.assert_allclose(arrays["train.y"], values)
    for metrics in (result.baseline, *(stage.metrics for stage in result.stages)):
        assert metrics["output_kind"] == "regression" and metrics["metric"] == "label_spearman"
        assert -1 <= metrics["label_spearman"] <= 1 and "accuracy" not in metrics


@pytest.mark.parametrize("text", [
    '{"split": "t", "text": "a", "label": 2}\n{"split": "v", "text": "b", "label": 0}',
    '{"split": "t", "text": "a", "label": "pos"}\n{"split": "t", "text": "b", "label": "neg"}',
    '{"split": "t", "text": "a", "label": [3, 1, 3]}\n{"split": "t", "text": "b", "label": []}',
    '{"split": "t", "text": "a", "label": [0, 1, 1]}\n{"split": "v", "text": "b", "label": [1, 0, 0]}',
    '{"split": "t", "text": "a", "label": 3.5}\n{"split": "t", "text": "b", "label": 1}',
    '{"split": "t", "text": "a", "label": [3.5, 1]}\n{"split": "v", "text": "b", "label": [0, 2]}',
    '{"split": "t", "text": "a", "label": [5, 1]}\n{"split": "v", "text": "b", "label": [2, 2]}',
    '{"split": "t", "text": "a b", "tags": [2, -100]}\n{"split": "v", "text": "c", "tags": [1]}',
    '{"split": "t", "text": "a b", "tags": ["B-PER", "O"]}',
    '{"split": "t", "text": "q", "text_pair": "a b", "answer": {"text": "b", "start": 2}}',
])
def test_the_upload_check_keeps_no_labels_but_describes_them_as_the_worker_reads_them(text):
    """The API reads a .jsonl for its manifest only: per split a summary, never the labels themselves (millions of
    word-tag lists would be held in its memory), and the manifest is the one the kept labels give."""
    summarized = read_jsonl(io.BytesIO(text.encode()))
    assert all(rows.labels == [] for rows in summarized.values())
    assert manifest_splits(summarized) == manifest_splits(_read(text))
