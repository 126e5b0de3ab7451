"""An extractive question-answering model (`BertForQuestionAnswering`, SQuAD's form) uploaded as a Hugging Face
folder keeps its head: rows are the question (`text`) and the context (`text_pair`), the program outputs the
answer span's start and end logits over the tokens, and the job judges how often the compressed model picks the
upload's start and end, and hands back a folder `from_pretrained` loads."""

import json

import pytest

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, zip_bytes


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


def test_answer_labels_are_refused_with_what_to_do(reader, tmp_path):
    with pytest.raises(InvalidUpload, match="a question-answering job reads no 'label' or 'tags'"):
        run_folder_pipeline(reader, _rows(tmp_path / "qa.jsonl", label=True), "question-answering",
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
