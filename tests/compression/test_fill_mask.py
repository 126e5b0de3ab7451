"""A pretrained encoder's checkpoint with its masked-LM head (`BertForMaskedLM`, `BertForPreTraining`: how
bert-base-uncased, RoBERTa, ALBERT, ... are saved) runs as task fill-mask on request: the worker masks a share of
each row's tokens, the program outputs the logits over the vocabulary at every token, the job is judged by how
many masked tokens the model fills in (as the upload would), and the compressed model comes back as a folder
`from_pretrained` loads."""

import json
import shutil

import numpy as np
import pytest
import torch

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.npz import IGNORED_LABEL
from compression.context import RunContext
from compression.formats import hf_folder
from compression.llm.pipeline import run_folder_pipeline
from compression.masked_tokens import MASKED_SHARE, masked_tokens
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import CORPUS, bert_folder, gpt2_folder, zip_bytes


@pytest.fixture(scope="module")
def masked_lm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("mlm")
    return bert_folder(directory / "mlm", masked_lm=True)


def _zip(folder, path, architectures=None):
    if architectures is not None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"architectures": architectures}))
    path.write_bytes(zip_bytes(folder))
    return path


def _text(path, labels: bool = False):
    rows = [{"split": split, "text": text} | ({"label": 1} if labels else {})
            for split, texts in (("train", CORPUS[:16]), ("val", CORPUS[16:40])) for text in texts]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def test_masking_hides_a_share_of_real_tokens_and_labels_them():
    rng = np.random.default_rng(1)
    ids = rng.integers(10, 50, size=(64, 20))
    mask = np.ones_like(ids)
    mask[:, 15:] = 0  # padding
    ids[:, 0], ids[:, 14] = 1, 2  # [CLS] ... [SEP]
    mask[0, 3:], ids[0, 2] = 0, 2  # a short row: one real token between its specials
    masked, labels = masked_tokens(ids, mask, special_ids=[1, 2], mask_id=3)
    chosen = labels != IGNORED_LABEL
    assert (masked[chosen] == 3).all() and (labels[chosen] == ids[chosen]).all()
    assert (masked[~chosen] == ids[~chosen]).all()
    assert not chosen[:, [0, 14]].any() and not chosen[mask == 0].any()  # never a special token or padding
    assert chosen.any(axis=1).all() and chosen[0].tolist() == [False, True] + [False] * 18
    share = chosen[1:].sum() / (13 * 63)
    assert abs(share - MASKED_SHARE) < 0.04
    again = masked_tokens(ids, mask, special_ids=[1, 2], mask_id=3)  # every stage fills in the same blanks
    assert (again[0] == masked).all() and (again[1] == labels).all()


def test_a_masked_lm_checkpoint_is_features_by_default_and_fill_mask_on_request(masked_lm, tmp_path):
    archive = _zip(masked_lm, tmp_path / "mlm.zip")
    assert read_hf_folder(archive).task == "feature-extraction"
    folder = read_hf_folder(archive, task="fill-mask")
    vocabulary = json.loads((masked_lm / "config.json").read_text())["vocab_size"]
    assert folder.signature()["outputs"] == [{"name": "logits", "shape": [None, None, vocabulary],
                                              "dtype": "float32"}]
    assert "model.cls.predictions.transform.dense" in folder.signature()["layers"]
    encoder = _zip(bert_folder(tmp_path / "encoder"), tmp_path / "encoder.zip")  # BertModel: no head to run
    with pytest.raises(InvalidUpload, match="has no trained fill-mask head"):
        read_hf_folder(encoder, task="fill-mask")
    with pytest.raises(InvalidUpload, match="transformers has no fill-mask model for model_type 'gpt2'"):
        read_hf_folder(_zip(gpt2_folder(tmp_path / "gpt2"), tmp_path / "gpt2.zip"), task="fill-mask")


def test_a_fill_mask_job_is_judged_on_the_masked_tokens_and_written_back_as_a_folder(masked_lm, tmp_path):
    from transformers import AutoTokenizer, BertForMaskedLM, pipeline

    archive = _zip(masked_lm, tmp_path / "mlm.zip")
    result = run_folder_pipeline(archive, _text(tmp_path / "text.jsonl"), "fill-mask",
                                 [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                                 tmp_path / "work")
    baseline = result.baseline
    assert baseline["output_kind"] == "logits" and baseline["metric"] == "accuracy"
    # The baseline is the upload's masked-LM accuracy on the masked rows, as transformers computes it.
    with np.load(tmp_path / "work" / "dataset.npz") as arrays:
        ids, mask, labels = (torch.from_numpy(arrays[f"val.{name}"]) for name in ("input_ids", "attention_mask", "y"))
    tokenizer = AutoTokenizer.from_pretrained(masked_lm)
    assert (ids[labels != IGNORED_LABEL] == tokenizer.mask_token_id).all()
    upload = BertForMaskedLM.from_pretrained(masked_lm).eval()
    with torch.no_grad():
        logits = upload(input_ids=ids, attention_mask=mask).logits
    scored = labels != IGNORED_LABEL
    assert baseline["accuracy"] == pytest.approx(float((logits.argmax(-1)[scored] == labels[scored]).float().mean()))
    stage = result.stages[0]
    assert stage.metrics["metric"] == "accuracy" and "perplexity" in stage.metrics
    assert stage.metrics["hf_folder"]["written"] and stage.metrics["hf_folder"]["compared_output"] == "logits"
    [artifact] = [artifact for artifact in stage.artifacts if artifact.name == hf_folder.ARTIFACT_NAME]
    loaded = hf_folder.load(artifact.path)
    assert type(loaded).__name__ == "BertForMaskedLM"
    filled = pipeline("fill-mask", model=loaded, tokenizer=tokenizer)(f"the cat {tokenizer.mask_token} the ball")
    assert len(filled) == 5 and all(row["token_str"] for row in filled)


def test_a_pretraining_checkpoint_runs_and_one_without_the_head_fails_at_once(masked_lm, tmp_path):
    pretraining = shutil.copytree(masked_lm, tmp_path / "pretraining")
    assert read_hf_folder(_zip(pretraining, tmp_path / "pre.zip", ["BertForPreTraining"]),
                          task="fill-mask").task == "fill-mask"
    # An ELECTRA-style discriminator is saved "ForPreTraining" too, without a masked-LM head: its weights would
    # start random, and the job says so before any work.
    headless = bert_folder(tmp_path / "headless")
    shutil.copy(masked_lm / "tokenizer.json", headless / "tokenizer.json")
    shutil.copy(masked_lm / "tokenizer_config.json", headless / "tokenizer_config.json")
    archive = _zip(headless, tmp_path / "headless.zip", ["BertForPreTraining"])
    with pytest.raises(InvalidUpload, match=r"these of its weights are not in the folder \(cls\.predictions"):
        run_folder_pipeline(archive, _text(tmp_path / "text.jsonl"), "fill-mask", [PTQSpec(calibration_samples=8)],
                            EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_fill_mask_text_needs_a_mask_token_and_no_labels(masked_lm, tmp_path):
    archive = _zip(masked_lm, tmp_path / "mlm.zip")
    with pytest.raises(InvalidUpload, match="its rows take no 'label', 'tags' or 'answer'"):
        run_folder_pipeline(archive, _text(tmp_path / "labelled.jsonl", labels=True), "fill-mask",
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work")
    unmasked = shutil.copytree(masked_lm, tmp_path / "unmasked")
    settings = json.loads((unmasked / "tokenizer_config.json").read_text())
    settings.pop("mask_token")
    (unmasked / "tokenizer_config.json").write_text(json.dumps(settings))
    with pytest.raises(InvalidUpload, match="this folder's tokenizer has none"):
        run_folder_pipeline(_zip(unmasked, tmp_path / "unmasked.zip"), _text(tmp_path / "text.jsonl"), "fill-mask",
                            [PTQSpec(calibration_samples=8)], EvaluationSpec(latency=False), RunContext(),
                            tmp_path / "work2")
