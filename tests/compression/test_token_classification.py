"""A token classifier (an NER tagger: `BertForTokenClassification`) uploaded as a Hugging Face folder keeps its
head: the task is read from `architectures`, the program outputs a row of class logits per token, and the job
compares them with the upload's over the real tokens, or with the word tags of the text (`tags`), and hands back a
folder `from_pretrained` loads."""

import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import read_jsonl
from compression.context import RunContext
from compression.formats import hf_folder
from compression.hf_program import token_tags
from compression.io import export_model, save_program
from compression.labels import label_loss
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from compression.text_labels import ModelClasses, label_array, word_tags
from tests.hf_folders import CORPUS, bert_folder, kd_and_ptq_job, zip_bytes

TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tagger")
    archive = directory / "ner.zip"
    archive.write_bytes(zip_bytes(bert_folder(directory / "ner", len(TAGS), per_token=True, id2label=TAGS)))
    return archive


def _rows(path):
    rows = [{"split": split, "text": text}
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


def test_word_tags_go_to_the_first_token_of_each_word():
    # "[CLS] John liv ##es in [SEP] [PAD]": special tokens and padding span no characters.
    offsets = np.array([[[0, 0], [0, 4], [5, 8], [8, 10], [12, 14], [0, 0], [0, 0]]])
    labels = token_tags(["John lives  in"], offsets, [[1, 0, 3]])
    assert labels.tolist() == [[-100, 1, 0, -100, 3, -100, -100]]
    assert token_tags(["John lives in"], offsets[:, :3], [[1, 2, 3]]).tolist() == [[-100, 1, 2]]  # truncated


def test_a_tagger_job_trains_and_is_judged_on_word_tags(tagger, tmp_path):
    names = ["O", "B-PER", "i-per", "B-LOC"]  # names as the config has them, one in another case
    rows = [{"split": split, "text": text, "tags": [names[index % 4] for index in range(len(text.split()))]}
            for split, texts in (("train", CORPUS[:8]), ("val", CORPUS[8:16])) for text in texts]
    result = kd_and_ptq_job(tagger, rows, "token-classification", tmp_path)
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        labels, mask = arrays["val.y"], arrays["val.attention_mask"]
    words = [len(text.split()) for text in CORPUS[8:16]]
    assert [(row != -100).sum() for row in labels] == words  # one tag per word, on its first token
    assert labels[0][labels[0] != -100].tolist() == [[0, 1, 2, 3][index % 4] for index in range(words[0])]
    assert ((labels == -100) | (mask == 1)).all()  # no tag on padding
    for metrics in (result.baseline, *(stage.metrics for stage in result.stages)):
        assert metrics["metric"] == "accuracy" and round(metrics["accuracy"] * sum(words), 6) % 1 == 0
    # [N, L] tags are a class per position, not a multi-label matrix: KL, not a label-by-label BCE.
    assert result.stages[0].metrics["method_metrics"]["loss"] == "kl"


def test_tags_that_do_not_fit_the_model_are_refused_with_what_to_do():
    def read(text: str):
        return read_jsonl(io.BytesIO(text.encode()), keep_text=True)

    with pytest.raises(InvalidUpload, match=r"one class per word of 'text' \(2 words.*got 3 tags"):
        read('{"split": "t", "text": "John lives", "tags": ["B-PER", "O", "O"]}')
    with pytest.raises(InvalidUpload, match="a row with them has no 'label'"):
        read('{"split": "t", "text": "John lives", "tags": ["B-PER", "O"], "label": 1}')
    with pytest.raises(InvalidUpload, match="'label' where the rows before give 'tags'; .* one of them"):
        read('{"split": "t", "text": "a b", "tags": [0, 1]}\n{"split": "v", "text": "c", "label": 1}')
    tagged = read('{"split": "t", "text": "John lives", "tags": ["B-PER", -100]}')["t"]
    tagger = ModelClasses(5, list(TAGS.values()), False, per_token=True)
    assert word_tags("t", tagged, tagger) == [[1, -100]]
    with pytest.raises(InvalidUpload, match="does not have: 'B-ORG'"):
        word_tags("t", read('{"split": "t", "text": "Acme", "tags": ["B-ORG"]}')["t"], tagger)
    with pytest.raises(InvalidUpload, match="the model is a token classifier: give each row 'tags'"):
        label_array("t", read('{"split": "t", "text": "a", "label": 1}')["t"], tagger)
    with pytest.raises(InvalidUpload, match="'tags' .* this model is not one"):
        word_tags("t", tagged, ModelClasses(5, None, False))


def test_a_pt2_sequence_model_takes_a_class_per_position_with_ignored_positions(tmp_path):
    """An .npz's [N, L] labels of a [N, L, C] output: a class per position, -100 where none applies (left out of
    accuracy and of the loss), never a multi-label or value matrix."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 16), nn.Linear(16, 4)).eval()
    ids = torch.randint(0, 20, (64, 6))
    labels = model(ids).argmax(-1).numpy().copy()
    labels[:, 0] = (labels[:, 0] + 1) % 4  # position 0 always wrong ...
    labels[:32, 0] = -100  # ... and ignored in half the rows
    np.savez(tmp_path / "d.npz", **{"train.x": ids.numpy(), "train.y": labels, "val.x": ids.numpy(),
                                    "val.y": labels})
    program = save_program(export_model(model, (ids[:2],)), tmp_path / "m.pt2")
    result = run_pipeline(program, tmp_path / "d.npz", [PTQSpec(calibration_samples=16)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "out")
    assert result.baseline["metric"] == "accuracy" and result.baseline["output_kind"] == "logits"
    assert result.baseline["accuracy"] == pytest.approx(1 - 32 / (64 * 6 - 32))  # 32 wrong of the labelled
    loss = label_loss(model(ids), torch.from_numpy(labels), "logits")
    read = torch.from_numpy(labels) != -100
    expected = F.cross_entropy(model(ids)[read], torch.from_numpy(labels)[read])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(label_loss(model(ids), torch.full((64, 6), -100), "logits")) == 0.0  # padding only: no NaN
