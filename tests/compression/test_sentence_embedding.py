"""A sentence-transformers folder's feature-extraction job works on the sentence embedding the folder declares
(modules.json -> N_Pooling/config.json, N_Normalize/), not on the token vectors: the program outputs it, metrics
and distillation treat it as an embedding, and the compressed HF folder carries the sentence-transformers files
and is checked on the same pooled output (issue 10)."""

import io
import json
import zipfile

import pytest
import torch
import torch.nn.functional as F

from compression.archive import InvalidUpload
from compression.archive.hf_folder import read_hf_folder
from compression.archive.jsonl import TextSplit
from compression.context import RunContext
from compression.hf_program import example_rows, folder_to_program
from compression.io import load_program
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, KDSpec, PTQSpec
from tests.hf_folders import CORPUS, add_sentence_transformers_files, bert_folder, jsonl_bytes, zip_bytes

VAL = ["the cat", "the dog sees the box near the tree", "fox", "the bird likes the stick"]


def _token_states(folder, ids, mask):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state


def _pooled_by_hand(hidden, mask, mode, normalize):
    """sentence-transformers' formulas, written out row by row over the real tokens."""
    rows = []
    for states, real in zip(hidden, mask.bool()):
        tokens = states[real]
        rows.append({"mean": tokens.mean(0), "cls": states[0], "max": tokens.max(0).values,
                     "lasttoken": tokens[-1]}[mode])
    pooled = torch.stack(rows)
    return pooled / pooled.norm(dim=1, keepdim=True) if normalize else pooled


def _sentence_folder(tmp_path, pooling="mean", normalize=True, max_seq_length=None):
    return add_sentence_transformers_files(bert_folder(tmp_path / "bert"), pooling, normalize, max_seq_length)


@pytest.mark.parametrize("pooling, normalize", [("mean", True), ("cls", False), ("max", True), ("lasttoken", False)])
def test_the_program_outputs_the_pooled_and_normalized_embedding(tmp_path, pooling, normalize):
    folder = _sentence_folder(tmp_path, pooling, normalize, max_seq_length=6)
    upload = read_hf_folder(io.BytesIO(zip_bytes(folder)), extract_to=tmp_path / "source")
    assert upload.sentence_embedding.pooling == pooling and upload.sentence_embedding.normalize == normalize
    assert upload.signature()["outputs"] == [{"name": "sentence_embedding", "shape": [None, 32], "dtype": "float32"}]
    assert upload.signature()["hf"]["sentence_embedding"]["from"] == "modules.json"
    splits = {"train": TextSplit(4, CORPUS[:4], []), "val": TextSplit(len(VAL), VAL, [])}
    folder_to_program(tmp_path / "source", "feature-extraction", splits, tmp_path / "m.pt2", tmp_path / "d.npz",
                      upload.sentence_embedding)
    ids, mask = example_rows(tmp_path / "d.npz", "val")
    assert ids.shape == (len(VAL), 6)  # sentence_bert_config.json's max_seq_length truncates, as theirs does
    with torch.no_grad():
        got = load_program(tmp_path / "m.pt2").module()(ids, mask)
    expected = _pooled_by_hand(_token_states(folder, ids, mask), mask, pooling, normalize)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"pooling": "weightedmean"}, "pooling mode 'weightedmean', which modelpress does not compute"),
    ({"flags": {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}}, "exactly one of"),
    ({"module": {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}}, "Dense"),
    ({"module": {"path": "../../etc", "type": "sentence_transformers.models.Normalize"}}, "path '../../etc'"),
])
def test_what_the_program_cannot_compute_is_refused_at_upload(tmp_path, change, message):
    folder = _sentence_folder(tmp_path, change.get("pooling", "mean"))
    if "flags" in change:
        config = json.loads((folder / "1_Pooling" / "config.json").read_text()) | change["flags"]
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    if "module" in change:
        modules = json.loads((folder / "modules.json").read_text())
        (folder / "modules.json").write_text(json.dumps(modules[:2] + [{"idx": 2, "name": "2", **change["module"]}]))
    with pytest.raises(InvalidUpload, match=message):
        read_hf_folder(io.BytesIO(zip_bytes(folder)))


def _job(tmp_path, folder, stages, evaluation=None):
    (tmp_path / "m.zip").write_bytes(zip_bytes(folder))
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:48], "val": CORPUS[48:]}))
    return run_folder_pipeline(tmp_path / "m.zip", tmp_path / "d.jsonl", "feature-extraction", stages,
                               evaluation or EvaluationSpec(latency=False), RunContext(), tmp_path / "work")


def test_ptq_measures_the_embedding_and_its_hf_folder_pools_like_the_stage_model(tmp_path):
    folder = _sentence_folder(tmp_path, "mean", True)
    result = _job(tmp_path, folder, [PTQSpec()])
    assert result.baseline["sentence_embedding"] == {"pooling": "mean", "normalize": True, "from": "modules.json",
                                                     "max_seq_length": 256, "applied": True}
    stage = result.stages[0]
    assert result.baseline["output_kind"] == "embeddings"
    assert "similarity_spearman" in stage.metrics and "top1_agreement" not in stage.metrics, stage.metrics
    written = stage.metrics["hf_folder"]
    assert written["written"], written
    assert written["compared_output"] == "sentence_embedding"
    assert set(written["sentence_transformers_files"]) >= {"modules.json", "1_Pooling/", "2_Normalize/"}

    archive = next(a for a in stage.artifacts if a.kind == "model.hf_folder")
    with zipfile.ZipFile(archive.path) as opened:
        assert {"modules.json", "1_Pooling/config.json", "2_Normalize/"} <= set(opened.namelist())
        opened.extractall(tmp_path / "unzipped")
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        assert (tmp_path / "unzipped" / name).read_bytes() == (folder / name).read_bytes()
    ids, mask = example_rows(tmp_path / "work" / "dataset.npz", "val")
    with torch.no_grad():
        stage_output = stage.model(ids, mask)
    from_folder = _pooled_by_hand(_token_states(tmp_path / "unzipped", ids, mask), mask, "mean", True)
    assert F.cosine_similarity(from_folder, stage_output).min() > 0.999
    assert float((from_folder - stage_output).abs().max()) < 0.05  # unit vectors; int8 input rounding at ties


def test_kd_distils_the_embedding_with_the_embedding_loss(tmp_path):
    folder = _sentence_folder(tmp_path, "cls", False)  # no normalize: detection alone would call this logits
    kd = KDSpec(student={"kind": "low_rank", "rank": 4}, training={"steps": 3, "batch_size": 8})
    result = _job(tmp_path, folder, [kd])
    stage = result.stages[0]
    method = stage.metrics["method_metrics"]
    assert method["output_kind"] == "embeddings" and method["loss"] == "cosine", method
    assert stage.metrics["output_kind"] == "embeddings" and "similarity_spearman" in stage.metrics
    ids, mask = example_rows(tmp_path / "work" / "dataset.npz", "val")
    with torch.no_grad():
        assert stage.model(ids, mask).shape == (len(ids), 32)


def test_the_sentence_embedding_can_be_switched_off(tmp_path):
    folder = _sentence_folder(tmp_path, "mean", True)
    result = _job(tmp_path, folder, [PTQSpec()], EvaluationSpec(latency=False, sentence_embedding=False))
    assert result.baseline["sentence_embedding"]["applied"] is False
    assert result.baseline["output_kind"] == "hidden_states"
    ids, mask = example_rows(tmp_path / "work" / "dataset.npz", "val")
    with torch.no_grad():
        assert result.stages[0].model(ids, mask).shape == (*ids.shape, 32)
    # The folder keeps the sentence-transformers files: its users pool as before.
    assert "modules.json" in result.stages[0].metrics["hf_folder"]["sentence_transformers_files"]


def test_a_plain_folder_keeps_the_token_vectors(tmp_path):
    upload = read_hf_folder(io.BytesIO(zip_bytes(bert_folder(tmp_path / "bert"))))
    assert upload.sentence_embedding is None
    assert upload.signature()["outputs"][0]["name"] == "last_hidden_state"
    assert upload.signature()["hf"]["sentence_embedding"] is None
