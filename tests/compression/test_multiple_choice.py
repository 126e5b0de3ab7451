"""A multiple-choice model (`BertForMultipleChoice`, SWAG's and RACE's form) uploaded as a Hugging Face folder keeps
its head: each row's `text` is read before each of its `choices` as a sentence pair, the program takes
[batch, choices, tokens] and outputs a logit per choice, the job judges the compressed model by accuracy against
the rows' labels (or by how often it picks the upload's choice), and hands back a folder `from_pretrained` loads."""

import io
import json

import numpy as np
import pytest

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import manifest_splits, read_jsonl
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, last_folder_of_accuracy_job, zip_bytes

ENDINGS = ["near the house", "finds the stick", "likes the ball", "sees the box"]  # words of the vocabulary


@pytest.fixture(scope="module")
def chooser(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chooser")
    archive = directory / "mc.zip"
    archive.write_bytes(zip_bytes(bert_folder(directory / "mc", multiple_choice=True)))
    return archive


def _rows(path, labelled: bool = True):
    rows = [{"split": split, "text": context, "choices": ENDINGS[index % 2:] + ENDINGS[:index % 2]}
            | ({"label": index % 4} if labelled else {})
            for split, contexts in (("train", CORPUS[:8]), ("val", CORPUS[8:16]))
            for index, context in enumerate(contexts)]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_the_task_is_read_from_the_head_and_the_program_takes_the_choices(chooser):
    folder = read_hf_folder(chooser)
    assert folder.task == "multiple-choice"
    signature = folder.signature()
    assert [tensor["shape"] for tensor in signature["inputs"]] == [[None, None, None]] * 2
    assert signature["outputs"] == [{"name": "logits", "shape": [None, None], "dtype": "float32"}]


def test_a_multiple_choice_job_is_judged_by_accuracy_and_written_back(chooser, tmp_path):
    result = run_folder_pipeline(chooser, _rows(tmp_path / "mc.jsonl"), "multiple-choice",
                                 [KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2, "batch_size": 4}),
                                  PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        ids, mask, labels = arrays["val.input_ids"], arrays["val.attention_mask"], arrays["val.y"]
    assert ids.shape[:2] == (8, 4) and mask.shape == ids.shape and list(labels) == [0, 1, 2, 3] * 2
    # each choice is read after the row's text: the first two choices of row 0 are its first two endings
    vocabulary = json.loads((tmp_path / "work" / "source" / "tokenizer.json").read_text())["model"]["vocab"]
    for choice, ending in enumerate(ENDINGS[:2]):
        words = [vocabulary[word] for word in f"{CORPUS[8]} {ending}".split()]
        assert [token for token in ids[0, choice] if token in words] == words
    loaded = last_folder_of_accuracy_job(result, rows=8)
    assert type(loaded).__name__ == "BertForMultipleChoice" and loaded.config.num_hidden_layers == 1


def test_unlabelled_rows_are_judged_against_the_uploads_choice(chooser, tmp_path):
    result = run_folder_pipeline(chooser, _rows(tmp_path / "mc.jsonl", labelled=False), "multiple-choice",
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["output_kind"] == "logits" and result.baseline["metric"] == "top1_agreement"
    assert 0 <= result.stages[0].metrics["top1_agreement"] <= 1


def test_a_label_may_be_the_right_choices_text_and_the_manifest_gives_the_count():
    lines = [{"split": "t", "text": "the cat", "choices": ["sleeps", "runs"], "label": "runs"},
             {"split": "t", "text": "the dog", "choices": ["sleeps", "runs"], "label": 0}]
    splits = read_jsonl(io.BytesIO("\n".join(map(json.dumps, lines)).encode()), keep_text=True)
    assert splits["t"].labels == [1, 0] and splits["t"].choices == [["sleeps", "runs"]] * 2
    described, label_range = manifest_splits(read_jsonl(io.BytesIO("\n".join(map(json.dumps, lines)).encode())))
    assert described["t"]["choices"] == {"shape": [2, 2], "dtype": "str"} and label_range["t"] == [0, 1]


@pytest.mark.parametrize("rows, expected", [
    ([{"choices": ["a"]}], "line 1: 'choices' must be a list of 2 to 16"),
    ([{"choices": ["a", ""]}], "line 1: 'choices' must be"),
    ([{"choices": ["a", "b"], "label": 2}], r"line 1: 'label' must be the index of the right choice \(0..1\)"),
    ([{"choices": ["a", "b"], "label": "c"}], "or the text of one of the row's 'choices'"),
    ([{"choices": ["a", "b"], "text_pair": "x"}], "line 1: a row with 'choices'"),
    ([{"choices": ["a", "b"]}, {"choices": ["a", "b", "c"]}], "line 2: 3 'choices' where the rows before give 2"),
    ([{"choices": ["a", "b"]}, {}], "line 2: no 'choices' where the rows before give 2"),
])
def test_choices_that_do_not_fit_are_refused_with_the_line(rows, expected):
    lines = [json.dumps({"split": "t", "text": "the cat"} | row) for row in rows]
    with pytest.raises(InvalidUpload, match=expected):
        read_jsonl(io.BytesIO("\n".join(lines).encode()))


def test_choices_for_another_model_and_a_chooser_without_them_are_refused(chooser, tmp_path):
    classifier = tmp_path / "classifier.zip"
    classifier.write_bytes(zip_bytes(bert_folder(tmp_path / "classifier", classes=2)))
    with pytest.raises(InvalidUpload, match="rows give 'choices'"):
        run_folder_pipeline(classifier, _rows(tmp_path / "mc.jsonl", labelled=False), "sequence-classification",
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps({"split": split, "text": text}) for split in ("train", "val")
                               for text in CORPUS[:4]))
    with pytest.raises(InvalidUpload, match="a multiple-choice model scores candidate answers"):
        run_folder_pipeline(chooser, plain, "multiple-choice", [PTQSpec(calibration_samples=8)],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work2")
