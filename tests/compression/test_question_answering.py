"""An extractive question-answering model (`BertForQuestionAnswering`, SQuAD's form) uploaded as a Hugging Face
folder keeps its head: rows are the question (`text`) and the context (`text_pair`), the program outputs the
answer span's start and end logits over the tokens, and the job judges how often the compressed model picks the
upload's start and end (or, with answers in the rows, the answer's start and end tokens), and hands back a folder
`from_pretrained` loads."""

import io
import json

import numpy as np
import pytest

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import read_jsonl
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, kd_and_ptq_job, zip_bytes


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    directory = tmp_path_factory.mktemp("reader")
    archive = directory / "qa.zip"
    archive.write_bytes(zip_bytes(bert_folder(directory / "qa", answers=True)))
    return archive


def _rows(path, label: bool = False):
    rows = [{"split": split, "text": "where is the cat", "text_pair": context} | ({"label": 0} if label else {})
            for split, contexts in (("train", CORPUS[:8]), ("val", CORPUS[8:16])) for context in contexts]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_the_task_is_read_from_the_head_and_the_output_is_the_span_logits(reader):
    folder = read_hf_folder(reader)
    assert folder.task == "question-answering"
    assert folder.signature()["outputs"] == [{"name": "span_logits", "shape": [None, 2, None], "dtype": "float32"}]


def test_a_reader_job_is_judged_by_the_answer_positions_and_written_back(reader, tmp_path):
    result = run_folder_pipeline(reader, _rows(tmp_path / "qa.jsonl"), "question-answering",
                                 [KDSpec(student={"kind": "layers", "keep": 1}, training={"steps": 2, "batch_size": 4}),
                                  PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["output_kind"] == "logits" and result.baseline["metric"] == "top1_agreement"
    assert result.stages[0].metrics["method_metrics"]["loss"] == "kl"  # over positions, per start and end
    for stage in result.stages:
        assert 0 <= stage.metrics["top1_agreement"] <= 1 and stage.metrics["hf_folder"]["written"]
        assert stage.metrics["hf_folder"]["compared_output"] == "span_logits"
    [written] = [a for a in result.stages[-1].artifacts if a.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(written.path)
    assert type(loaded).__name__ == "BertForQuestionAnswering" and loaded.config.num_hidden_layers == 1


def test_answers_are_the_start_and_end_tokens_of_the_answer_in_the_context(reader, tmp_path):
    rows = []
    for split, contexts in (("train", CORPUS[:8]), ("val", CORPUS[8:16])):
        for index, context in enumerate(contexts):
            word = context.split()[1]
            answer = ({"answers": {"text": [], "answer_start": []}} if index % 4 == 3 else  # unanswerable
                      {"answer": {"text": word, "start": context.index(word)}})
            rows.append({"split": split, "text": "what is it", "text_pair": context} | answer)
    result = kd_and_ptq_job(reader, rows, "question-answering", tmp_path)
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        ids, positions = arrays["val.input_ids"], arrays["val.y"]
    vocabulary = json.loads((tmp_path / "work" / "source" / "tokenizer.json").read_text())["model"]["vocab"]
    for index, (row, (start, end)) in enumerate(zip(ids, positions)):
        if index % 4 == 3:
            assert start == end == -100
        else:  # the one-word answer is the second word of the context: its token
            assert start == end and row[start] == vocabulary[CORPUS[8 + index].split()[1]]
    for metrics in (result.baseline, *(stage.metrics for stage in result.stages)):
        assert metrics["metric"] == "accuracy" and round(metrics["accuracy"] * 12, 6) % 1 == 0  # 6 rows x 2
        # the best spans of the 6 answered rows, against the answers (compression.answer_spans)
        assert round(metrics["answer_exact_match"] * 6, 6) % 1 == 0
        assert metrics["answer_exact_match"] <= metrics["answer_f1"] <= 1


@pytest.mark.parametrize("row, expected", [
    ({"answer": {"text": "cat", "start": 0}}, "is not at character 0 of 'text_pair'"),
    ({"answer": {"text": "cat"}}, "'answer' must be"),
    ({"answers": {"text": "cat", "answer_start": 4}}, "SQuAD's"),
    ({"answer": {"text": "cat", "start": 4}, "label": 1}, "not both"),
])
def test_answers_that_do_not_fit_their_context_are_refused_with_the_line(row, expected):
    line = {"split": "t", "text": "what", "text_pair": "the cat"} | row
    with pytest.raises(InvalidUpload, match=f"line 1: .*{expected}"):
        read_jsonl(io.BytesIO(json.dumps(line).encode()))
    with pytest.raises(InvalidUpload, match="an answer lies in the context, the row's 'text_pair'"):
        read_jsonl(io.BytesIO(json.dumps({"split": "t", "text": "the cat", "answer": {"text": "cat", "start": 4}})
                              .encode()))


def test_labels_that_are_no_answers_are_refused_with_what_to_do(reader, tmp_path):
    with pytest.raises(InvalidUpload, match="a question-answering model is labelled with answers, not 'label'"):
        run_folder_pipeline(reader, _rows(tmp_path / "qa.jsonl", label=True), "question-answering",
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
