"""A token classifier (an NER tagger: `BertForTokenClassification`) uploaded as a Hugging Face folder keeps its
head: the task is read from `architectures`, the program outputs a row of class logits per token, and the job
compares them with the upload's over the real tokens and hands back a folder `from_pretrained` loads."""

import json

import pytest

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, zip_bytes

TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tagger")
    archive = directory / "ner.zip"
    archive.write_bytes(zip_bytes(bert_folder(directory / "ner", len(TAGS), per_token=True, id2label=TAGS)))
    return archive


def _rows(path, labelled: bool = False):
    rows = [{"split": split, "text": text} | ({"label": 0} if labelled else {})
            for split, texts in (("train", CORPUS[:8]), ("val", CORPUS[8:16])) for text in texts]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_the_task_is_read_from_the_head_and_the_output_is_logits_per_token(tagger, tmp_path):
    folder = read_hf_folder(tagger)
    assert folder.task == "token-classification"
    assert folder.signature()["outputs"] == [{"name": "logits", "shape": [None, None, len(TAGS)],
                                              "dtype": "float32"}]
    assert read_hf_folder(tagger, task="feature-extraction").task == "feature-extraction"  # its encoder, on request
    encoder = tmp_path / "encoder.zip"
    encoder.write_bytes(zip_bytes(bert_folder(tmp_path / "encoder")))
    with pytest.raises(InvalidUpload, match="has no trained token-classification head"):
        read_hf_folder(encoder, task="token-classification")


def test_a_tagger_job_is_judged_token_by_token_and_written_back_as_a_folder(tagger, tmp_path):
    result = run_folder_pipeline(tagger, _rows(tmp_path / "text.jsonl"), "token-classification",
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    assert result.baseline["output_kind"] == "logits" and result.baseline["metric"] == "top1_agreement"
    stage = result.stages[0]
    assert stage.metrics["hf_folder"]["written"] and stage.metrics["hf_folder"]["compared_output"] == "logits"
    [folder_artifact] = [artifact for artifact in stage.artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(folder_artifact.path)
    assert type(loaded).__name__ == "BertForTokenClassification" and loaded.config.id2label == TAGS


def test_labels_are_refused_with_what_to_do(tagger, tmp_path):
    with pytest.raises(InvalidUpload, match="a token-classification job reads no 'label'.*drop 'label'"):
        run_folder_pipeline(tagger, _rows(tmp_path / "text.jsonl", labelled=True), "token-classification",
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
