"""Hugging Face folders and .jsonl text datasets through the API: upload checks and job submission checks."""

import io
import json

import numpy as np
import pytest

from tests.hf_folders import (  # noqa: F401 (fixtures)
    CORPUS,
    VIT_PROCESSOR,
    WHISPER_BINS,
    WHISPER_FRAMES,
    audio_folder,
    bert_dir,
    bert_folder,
    ctc_folder,
    depth_anything_folder,
    detr_folder,
    dual_encoder_folder,
    gpt2_folder,
    image_folder,
    jsonl_bytes,
    llama_dir,
    llama_folder,
    segformer_folder,
    seq2seq_folder,
    tar_bytes,
    vision_encoder_decoder_folder,
    whisper_folder,
    zip_bytes,
)

LLM_STAGE = {"method": "llm_ptq", "algorithm": "rtn", "group_size": 32}
LAYERS_KD = {"method": "kd", "student": {"kind": "layers", "keep": 1}}


def _upload(api, auth, what: str, name: str, data: bytes, **params):
    return api.post(f"/v1/{what}", headers=auth, params=params, files={"file": (name, data)})


@pytest.fixture
def hf(api, auth, llama_dir, bert_dir) -> dict:
    created = {"llama": _upload(api, auth, "models", "llama.zip", zip_bytes(llama_dir, top="llama")),
               "bert": _upload(api, auth, "models", "bert.tar", tar_bytes(bert_dir)),
               "text": _upload(api, auth, "datasets", "text.jsonl",
                               jsonl_bytes({"train": CORPUS[:40], "val": CORPUS[40:]})),
               "labelled": _upload(api, auth, "datasets", "labelled.jsonl",
                                   jsonl_bytes({"train": CORPUS[:4]}, {"train": [0, 1, 0, 1]}))}
    for response in created.values():
        assert response.status_code == 201, response.text
    return {name: response.json() for name, response in created.items()}


def test_folder_uploads_record_kind_and_task(api, auth, hf, llama_dir):
    assert (hf["llama"]["kind"], hf["llama"]["task"]) == ("hf_folder", "causal-lm")
    assert (hf["bert"]["kind"], hf["bert"]["task"]) == ("hf_folder", "feature-extraction")
    assert hf["llama"]["signature"]["hf"]["model_type"] == "llama"
    assert hf["bert"]["signature"]["hf"]["num_hidden_layers"] == 2
    assert api.get(f"/v1/models/{hf['llama']['id']}", headers=auth).json() == hf["llama"]
    assert hf["text"]["manifest"]["format"] == "jsonl"
    # The name does not decide: a folder named .pt2 is still a folder, and the task can be given.
    renamed = _upload(api, auth, "models", "model.pt2", zip_bytes(llama_dir), task="feature-extraction")
    assert renamed.status_code == 201 and renamed.json()["task"] == "feature-extraction"


@pytest.mark.parametrize("extra, params, expected", [
    ({"pytorch_model.bin": b"\x80\x04"}, {}, "convert the weights to safetensors"),
    ({"modeling_llama.py": b"import os"}, {}, "remote code is never run"),
    ({}, {"task": "sequence-classification"}, "no trained sequence-classification head"),
    ({}, {"task": "translation"}, "task"),
])
def test_hostile_or_mismatched_folders_are_refused(api, auth, llama_dir, extra, params, expected):
    response = _upload(api, auth, "models", "m.zip", zip_bytes(llama_dir, extra=extra), **params)
    assert response.status_code == 422, response.text
    assert expected in response.text


def test_a_task_with_a_pt2_is_refused(api, auth, example_files):
    response = _upload(api, auth, "models", "m.pt2", example_files[0].read_bytes(), task="causal-lm")
    assert response.status_code == 422 and "only with a Hugging Face folder" in response.json()["detail"]


def test_bad_jsonl_is_refused_with_the_line(api, auth):
    response = _upload(api, auth, "datasets", "d.jsonl", b'{"split": "train", "text": "a"}\n{"split": 1}\n')
    assert response.status_code == 422 and "line 2" in response.json()["detail"]


def _job(api, auth, model: dict, dataset: dict, stages: list, evaluation: dict | None = None) -> tuple[int, str]:
    response = api.post("/v1/jobs", headers=auth, json={"model_id": model["id"], "dataset_id": dataset["id"],
                                                        "stages": stages, "evaluation": evaluation or {}})
    return response.status_code, response.text


def test_jobs_check_what_runs_on_what(api, auth, hf, uploaded):
    assert _job(api, auth, hf["llama"], hf["text"], [LLM_STAGE])[0] == 201
    # The other methods run on a causal LM's exported program (labels: each position's next token).
    assert _job(api, auth, hf["llama"], hf["text"], [{"method": "prune"}, {"method": "ptq"}])[0] == 201
    # Its text is its labels: next-token accuracy needs none in the rows, and a row's own label is not read.
    assert _job(api, auth, hf["llama"], hf["text"], [{"method": "qat"}], {"metric": "accuracy"})[0] == 201
    assert _job(api, auth, hf["llama"], hf["labelled"], [{"method": "prune"}], {"split": "train"})[0] == 201
    # ... whose layers are the folder's under `model.` (the wrapper that gives the program its one output).
    assert _job(api, auth, hf["llama"], hf["text"], [{"method": "ptq", "exclude": ["model.lm_head"]}])[0] == 201
    status, text = _job(api, auth, hf["llama"], hf["text"], [{"method": "ptq", "exclude": ["lm_head"]}])
    assert status == 422 and "match no layer of the model" in text and "model.lm_head" in text
    assert _job(api, auth, hf["bert"], hf["text"], [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, hf["bert"], hf["text"], [LAYERS_KD])[0] == 201
    # a group size wider than a layer: that layer takes a group that fits (`WeightFormat.for_columns`)
    assert _job(api, auth, hf["llama"], hf["text"], [LLM_STAGE | {"group_size": 128}])[0] == 201
    for model, dataset, stages, expected in [
        (uploaded["model"], uploaded["dataset"], [LLM_STAGE], "this model is a .pt2 program"),
        (uploaded["model"], hf["text"], [{"method": "ptq"}], "a .jsonl text dataset needs a Hugging Face folder"),
        (hf["llama"], hf["text"], [{"method": "ptq"}, LLM_STAGE], "llm_ptq writes a compressed-tensors folder from "
         "the uploaded checkpoint, so it runs alone"),
        (hf["llama"], uploaded["dataset"], [LLM_STAGE], "takes a .jsonl text dataset"),
        (hf["bert"], hf["text"], [LLM_STAGE], "this folder's task is feature-extraction"),
        (hf["bert"], hf["labelled"], [{"method": "ptq"}], "holds class labels but the model output"),
        (hf["llama"], hf["text"], [LLM_STAGE, LLM_STAGE], "cannot follow stage 0 (llm_ptq)"),
        (uploaded["model"], uploaded["dataset"], [LAYERS_KD | {"student": {"kind": "layers", "keep": 1}}],
         "stages.0.student: a 'layers' student is made from the layers of a Hugging Face folder upload"),
        (hf["bert"], hf["text"], [LAYERS_KD | {"student": {"kind": "layers", "keep": 2}}],
         "stages.0.student: a 'layers' student keeps fewer layers than the model has (2); got keep 2"),
        (hf["bert"], hf["text"], [LAYERS_KD | {"student": {"kind": "layers", "layers": [0, 2]}}],
         "with indices 0..1; got layers [0, 2]"),
    ]:
        status, text = _job(api, auth, model, dataset, stages)
        assert status == 422 and expected in text, text


def test_lm_head_patterns_on_a_tied_model_say_where_the_output_layer_is(api, auth, hf, tmp_path):
    """A tied causal LM (Llama 3.2, Qwen2.5, GPT-2) stores one table for its embedding and output layer: no
    `lm_head` in the checkpoint or the program; the refusal says so and names the layer to use."""
    tied = _upload(api, auth, "models", "tied.zip", zip_bytes(llama_folder(tmp_path / "tied", tie=True)))
    assert tied.status_code == 201, tied.text
    status, text = _job(api, auth, tied.json(), hf["text"], [{"method": "ptq", "exclude": ["*lm_head*"]}])
    assert status == 422 and "no separate lm_head" in text and "(model.model.embed_tokens)" in text, text
    assert _job(api, auth, tied.json(), hf["text"], [{"method": "ptq", "exclude": ["model.model.embed_tokens"]}]
                )[0] == 201


def test_gpt2_patterns_name_the_opt_rewrite_the_jobs_run(api, auth, hf, tmp_path):
    """A GPT-2 folder's jobs run its OPT rewrite (nn.Linear layers): patterns name its layers, as the worker's
    program does (the API checked the GPT-2 checkpoint's names, which every job then failed on)."""
    gpt2 = _upload(api, auth, "models", "gpt2.zip", zip_bytes(gpt2_folder(tmp_path / "gpt2")))
    assert gpt2.status_code == 201, gpt2.text
    opt_layer = "model.model.decoder.layers.0.self_attn.q_proj"
    assert _job(api, auth, gpt2.json(), hf["text"], [{"method": "ptq", "exclude": [opt_layer]}])[0] == 201
    status, text = _job(api, auth, gpt2.json(), hf["text"], [{"method": "ptq",
                                                              "exclude": ["model.transformer.h.0.attn.c_attn"]}])
    assert status == 422 and opt_layer in text, text


def test_a_mixture_of_experts_jobs_are_checked_at_submission_or_left_to_the_dry_run(api, auth, hf, tmp_path):
    """A mixture of experts' program runs each expert as its own linear layers (`compression.moe_experts`), named
    as neither checkpoint layout names them: the API accepts patterns naming them, and the worker checks them."""
    from bench.hf_architecture_sweep import folder_zip

    moe = _upload(api, auth, "models", "moe.zip", folder_zip("mixtral", "causal-lm", tmp_path).read_bytes())
    assert moe.status_code == 201, moe.text
    assert _job(api, auth, moe.json(), hf["text"], [{"method": "ptq", "exclude": ["*.experts.down_proj.1"]}]
                )[0] == 201
    # llm_ptq quantizes each expert (`compression.llm.moe`); transformers loads per-expert layers without zero
    # points, which the checkpoint's per-expert tensors tell before any work.
    assert _job(api, auth, moe.json(), hf["text"], [LLM_STAGE])[0] == 201
    status, text = _job(api, auth, moe.json(), hf["text"], [LLM_STAGE | {"algorithm": "hqq"}])
    assert status == 422 and "stages.0.symmetric: a mixture of experts' folder" in text, text
    assert _job(api, auth, hf["llama"], hf["text"], [LLM_STAGE | {"algorithm": "hqq"}])[0] == 201


def test_windows_past_a_learned_position_table_are_refused(api, auth, hf, tmp_path):
    # GPT-2's 64-row `wpe` cannot index the default 512-token windows; Llama's rotary positions (256 in its
    # config) can, and its default job is accepted above.
    gpt2 = _upload(api, auth, "models", "gpt2.zip", zip_bytes(gpt2_folder(tmp_path / "gpt2"))).json()
    status, text = _job(api, auth, gpt2, hf["text"], [LLM_STAGE])
    assert status == 422 and ("windows of 512 tokens (calibration.sequence_length, evaluation.context_length) "
                              "exceed the model's 64 positions; set both to at most 64") in text
    assert _job(api, auth, hf["llama"], hf["text"], [LLM_STAGE | {"evaluation": {"context_length": 1024}}])[0] == 201


def test_awq_is_accepted_for_blocks_that_are_not_llamas(api, auth, hf, tmp_path):
    # Refused until 2026-12-05 (AWQ's groups were Llama's module names); they are now found in the block's forward.
    gpt2 = _upload(api, auth, "models", "gpt2.zip", zip_bytes(gpt2_folder(tmp_path / "gpt2"))).json()
    status, text = _job(api, auth, gpt2, hf["text"], [LLM_STAGE | {"algorithm": "awq", "calibration":
                                                                   {"sequence_length": 32},
                                                                   "evaluation": {"context_length": 32}}])
    assert status == 201, text
    assert _job(api, auth, hf["llama"], hf["text"], [LLM_STAGE | {"algorithm": "awq"}])[0] == 201


def test_calibrating_algorithms_need_the_train_split(api, auth, hf):
    only_val = _upload(api, auth, "datasets", "v.jsonl", jsonl_bytes({"val": CORPUS})).json()
    status, text = _job(api, auth, hf["llama"], only_val, [LLM_STAGE | {"algorithm": "gptq"}])
    assert status == 422 and "split 'train' is not in the dataset" in text
    assert _job(api, auth, hf["llama"], only_val, [LLM_STAGE])[0] == 201


def test_npz_datasets_still_read(api, auth):
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": np.zeros((2, 3), np.float32)})
    response = _upload(api, auth, "datasets", "d.npz", buffer.getvalue())
    assert response.status_code == 201 and response.json()["manifest"]["format"] == "npz"


def test_checking_a_folder_and_text_imports_neither_torch_nor_transformers(tmp_path, llama_dir):
    import subprocess
    import sys
    (tmp_path / "m.zip").write_bytes(zip_bytes(llama_dir))
    (tmp_path / "d.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:3]}))
    code = ("import sys; from compression.inspect import inspect_model, inspect_dataset; "
            f"assert inspect_model(open({str(tmp_path / 'm.zip')!r}, 'rb')).task == 'causal-lm'; "
            f"inspect_dataset(open({str(tmp_path / 'd.jsonl')!r}, 'rb')); "
            "sys.exit(bool({'torch', 'transformers'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_an_idempotent_retry_must_send_the_same_task(api, auth, llama_dir):
    data, key = zip_bytes(llama_dir), {"Idempotency-Key": "hf-upload-1"}
    first = api.post("/v1/models", headers=auth | key, files={"file": ("m.zip", data)})
    again = api.post("/v1/models", headers=auth | key, files={"file": ("m.zip", data)})
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
    other = api.post("/v1/models", headers=auth | key, params={"task": "feature-extraction"},
                     files={"file": ("m.zip", data)})
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"


def test_a_folder_and_its_text_arrive_through_resumable_uploads_too(api, auth, llama_dir):
    """Large checkpoints are what resumable uploads are for: a folder completes with its task, text as a dataset."""
    import hashlib
    created = {}
    for kind, name, data, params in (("model", "llama.zip", zip_bytes(llama_dir, top="llama"), {"task": "causal-lm"}),
                                     ("dataset", "text.jsonl", jsonl_bytes({"train": CORPUS[:40]}), {})):
        upload = api.post("/v1/uploads", headers=auth, json={"kind": kind, "name": name, "size_bytes": len(data),
                                                              "sha256": hashlib.sha256(data).hexdigest()}).json()
        for number in range(upload["parts_total"]):
            part = data[number * upload["part_bytes"]:(number + 1) * upload["part_bytes"]]
            assert api.put(f"/v1/uploads/{upload['id']}/parts/{number}", content=part, headers={
                **auth, "X-Checksum-SHA256": hashlib.sha256(part).hexdigest()}).status_code == 200
        done = api.post(f"/v1/uploads/{upload['id']}/complete", headers=auth, params=params)
        assert done.status_code == 200, done.text
        created[kind] = done.json()["result"]
    assert (created["model"]["kind"], created["model"]["task"]) == ("hf_folder", "causal-lm")
    assert created["dataset"]["manifest"]["format"] == "jsonl"


def test_a_sentence_transformers_folder_records_its_embedding_or_is_refused(api, auth, bert_dir):
    modules = json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                          {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                          {"idx": 2, "name": "2", "path": "2_Normalize",
                           "type": "sentence_transformers.models.Normalize"}]).encode()
    extra = {"modules.json": modules, "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}'}
    created = _upload(api, auth, "models", "st.zip", zip_bytes(bert_dir, extra=extra))
    assert created.status_code == 201, created.text
    signature = created.json()["signature"]
    assert signature["outputs"][0]["name"] == "sentence_embedding"
    assert signature["hf"]["sentence_embedding"]["pooling"] == "mean"
    assert signature["hf"]["sentence_embedding"]["normalize"] is True
    weighted = extra | {"1_Pooling/config.json": b'{"pooling_mode_weightedmean_tokens": true}'}
    refused = _upload(api, auth, "models", "st.zip", zip_bytes(bert_dir, extra=weighted))
    assert refused.status_code == 422 and "pooling mode 'weightedmean'" in refused.text, refused.text


def test_sentence_pairs_go_to_encoders_and_classifiers_only(api, auth, hf):
    rows = [{"split": split, "text": CORPUS[index], "text_pair": CORPUS[index + 1]}
            for split, indices in (("train", range(0, 20)), ("val", range(20, 30))) for index in indices]
    pairs = _upload(api, auth, "datasets", "pairs.jsonl", ("\n".join(json.dumps(r) for r in rows) + "\n").encode())
    assert pairs.status_code == 201, pairs.text
    assert "text_pair" in pairs.json()["manifest"]["splits"]["train"]
    assert _job(api, auth, hf["bert"], pairs.json(), [{"method": "ptq"}])[0] == 201
    status, text = _job(api, auth, hf["llama"], pairs.json(), [LLM_STAGE])
    assert status == 422 and "rows take no 'text_pair'" in text, text


def test_class_names_and_label_lists_are_checked_against_the_folders_classes(api, auth, tmp_path):
    names = ["NEGATIVE", "POSITIVE", "neutral"]
    folders = {"single": bert_folder(tmp_path / "single", 3, id2label=dict(enumerate(names))),
               "multi": bert_folder(tmp_path / "multi", 3, id2label=dict(enumerate(names)),
                                    problem_type="multi_label_classification")}
    models = {key: _upload(api, auth, "models", f"{key}.zip", zip_bytes(folder), task="sequence-classification")
              for key, folder in folders.items()}
    assert all(response.status_code == 201 for response in models.values()), [r.text for r in models.values()]
    assert models["multi"].json()["signature"]["hf"]["classes"] == {"names": names, "multi_label": True,
                                                                   "regression": False}
    datasets = {}
    for key, labels in {"names": ["positive", "NEGATIVE", "Neutral", "POSITIVE"],
                        "unknown": ["positive", "joy", "NEGATIVE", "anger"],
                        "lists": [["positive", "neutral"], [], ["NEGATIVE"], ["POSITIVE"]],
                        "index_lists": [[0, 2], [], [1], [5]],
                        "flags": [[0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]],
                        "wide_flags": [[0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]]}.items():
        response = _upload(api, auth, "datasets", f"{key}.jsonl",
                           jsonl_bytes({"train": CORPUS[:4], "val": CORPUS[4:8]}, {"train": labels, "val": labels}))
        assert response.status_code == 201, response.text
        datasets[key] = response.json()
    assert datasets["names"]["manifest"]["splits"]["val"]["y"]["names"] == ["NEGATIVE", "Neutral", "POSITIVE",
                                                                              "positive"]
    single, multi = models["single"].json(), models["multi"].json()
    for model, dataset in ((single, datasets["names"]), (multi, datasets["lists"]), (multi, datasets["flags"])):
        status, text = _job(api, auth, model, dataset, [{"method": "ptq"}])
        assert status == 201, text
    for model, dataset, expected in [
        (single, datasets["unknown"], "names classes the model does not have: 'anger', 'joy'; the model's classes "
                                      "(config.json id2label, in index order) are 'NEGATIVE', 'POSITIVE', 'neutral'"),
        (single, datasets["lists"], "problem_type is not 'multi_label_classification'"),
        (multi, datasets["index_lists"], "class indices over [0, 5] but the model has 3 classes"),
        (multi, datasets["wide_flags"], "gives each row 4 0/1 flags, one per class, but the model has 3 classes"),
    ]:
        status, text = _job(api, auth, model, dataset, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def test_values_are_checked_against_a_regression_head_or_a_classifier(api, auth, tmp_path):
    folders = {"regression": bert_folder(tmp_path / "regression", 1, problem_type="regression"),
               "classifier": bert_folder(tmp_path / "classifier", 3)}
    models = {key: _upload(api, auth, "models", f"{key}.zip", zip_bytes(folder), task="sequence-classification")
              for key, folder in folders.items()}
    assert all(response.status_code == 201 for response in models.values()), [r.text for r in models.values()]
    assert models["regression"].json()["signature"]["hf"]["classes"]["regression"] is True
    datasets = {}
    for key, labels in {"scores": [0.5, 3.8, 5, 1], "ratings": [1, 5, 3, 2], "names": ["high", "low", "low", "high"]
                        }.items():
        response = _upload(api, auth, "datasets", f"{key}.jsonl",
                           jsonl_bytes({"train": CORPUS[:4], "val": CORPUS[4:8]}, {"train": labels, "val": labels}))
        assert response.status_code == 201, response.text
        datasets[key] = response.json()
    assert datasets["scores"]["manifest"]["splits"]["val"]["y"] == {"shape": [4], "dtype": "float32", "values": True}
    regression, classifier = models["regression"].json(), models["classifier"].json()
    for dataset in (datasets["scores"], datasets["ratings"]):
        status, text = _job(api, auth, regression, dataset, [{"method": "ptq"}])
        assert status == 201, text
    for model, dataset, evaluation, expected in [
        (classifier, datasets["scores"], {}, "values (numbers that are no class index, such as 3.8), but the model "
                                             "is a classifier with 3 classes"),
        (regression, datasets["names"], {}, "gives class names, but the model is a regression head"),
        (regression, datasets["scores"], {"output_kind": "logits"}, "leave it unset or set it to 'regression'"),
        (regression, datasets["ratings"], {"metric": "accuracy"}, "use evaluation.metric 'label_spearman'"),
    ]:
        status, text = _job(api, auth, model, dataset, [{"method": "ptq"}], evaluation)
        assert status == 422 and expected in text, text


def test_lists_of_values_are_checked_against_the_regression_heads_outputs(api, auth, tmp_path):
    """A regression head with two outputs takes a list of two values per row (whole numbers too); other lengths
    are refused at submission, and lists a classifier cannot read (some 0/1 flag vectors, some not) as well."""
    folders = {"two_values": bert_folder(tmp_path / "two", 2, problem_type="regression"),
               "classifier": bert_folder(tmp_path / "classifier", 3, problem_type="multi_label_classification")}
    models = {key: _upload(api, auth, "models", f"{key}.zip", zip_bytes(folder)).json()
              for key, folder in folders.items()}
    datasets = {}
    for key, labels in {"pairs": [[0.5, -1.0], [3.8, 2.0], [5, 1], [1, 0.25]],
                        "whole_pairs": [[1, 1], [0, 2], [5, 1], [3, 3]],
                        "triples": [[0.5, 1.0, 2.0], [1.5, 0, 0], [2.5, 1, 1], [0, 0, 0]],
                        "mixed": [[0, 0, 1], [2, 1, 0], [1, 1, 0], [0, 2, 2]]}.items():
        response = _upload(api, auth, "datasets", f"{key}.jsonl",
                           jsonl_bytes({"train": CORPUS[:4], "val": CORPUS[4:8]}, {"train": labels, "val": labels}))
        assert response.status_code == 201, response.text
        datasets[key] = response.json()
    assert datasets["pairs"]["manifest"]["splits"]["val"]["y"] == {"shape": [4, 2], "dtype": "float32",
                                                                   "values": True}
    for dataset in (datasets["pairs"], datasets["whole_pairs"]):
        status, text = _job(api, auth, models["two_values"], dataset, [{"method": "ptq"}])
        assert status == 201, text
    for model, dataset, expected in [
        ("two_values", "triples", "gives 3 values per row, but the regression head predicts 2 values: label each "
                                  "row with a list of the 2 numbers it should predict"),
        ("classifier", "pairs", "values (numbers that are no class index, such as 3.8), but the model is a "
                                "classifier with 3 classes"),
        ("classifier", "mixed", "the 'label' lists mix 0/1 flag vectors"),
    ]:
        status, text = _job(api, auth, models[model], datasets[dataset], [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def test_a_token_classifier_keeps_its_task_and_takes_word_tags(api, auth, tmp_path):
    tags = {0: "O", 1: "B-PER", 2: "I-PER"}
    folder = bert_folder(tmp_path / "ner", 3, per_token=True, id2label=tags)
    model = _upload(api, auth, "models", "ner.zip", zip_bytes(folder))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "token-classification"
    assert model.json()["signature"]["outputs"][0]["shape"] == [None, None, 3]
    classifier = _upload(api, auth, "models", "classifier.zip", zip_bytes(bert_folder(tmp_path / "classifier", 3)))

    def dataset(name: str, tag=None, label=None) -> dict:
        rows = [{"split": split, "text": text} | ({"tags": [tag(i) for i in range(len(text.split()))]} if tag else {})
                | ({"label": label} if label is not None else {})
                for split, texts in (("train", CORPUS[:4]), ("val", CORPUS[4:8])) for text in texts]
        response = _upload(api, auth, "datasets", f"{name}.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
        assert response.status_code == 201, response.text
        return response.json()

    tagged = dataset("tagged", lambda i: ["O", "B-PER", "i-per"][i % 3])
    assert tagged["manifest"]["splits"]["val"]["y"]["per_word"] is True
    assert _job(api, auth, model.json(), dataset("unlabelled"), [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, model.json(), tagged, [{"method": "ptq"}])[0] == 201
    for model_json, data, expected in [
        (model.json(), dataset("labelled", label=1), "the model is a token classifier: give each row 'tags'"),
        (model.json(), dataset("unknown", lambda i: "B-ORG"), "names classes the model does not have: 'B-ORG'"),
        (model.json(), dataset("past", lambda i: i), "has class indices over [0, 7] but the model has 3 classes"),
        (classifier.json(), tagged, "gives 'tags' (a class per word), which label a token classifier's words"),
    ]:
        status, text = _job(api, auth, model_json, data, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def test_a_question_answering_folder_keeps_its_task_and_takes_answers(api, auth, tmp_path):
    model = _upload(api, auth, "models", "qa.zip", zip_bytes(bert_folder(tmp_path / "qa", answers=True)))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "question-answering"
    classifier = _upload(api, auth, "models", "classifier.zip", zip_bytes(bert_folder(tmp_path / "classifier", 3)))
    rows = [{"split": split, "text": "what is it", "text_pair": context}
            for split, contexts in (("train", CORPUS[:4]), ("val", CORPUS[4:8])) for context in contexts]
    answers = [{"answers": {"text": [row["text_pair"].split()[1]],
                            "answer_start": [row["text_pair"].index(row["text_pair"].split()[1])]}} for row in rows]
    datasets = {name: _upload(api, auth, "datasets", f"{name}.jsonl", "\n".join(
        json.dumps(row | extra) for row, extra in zip(rows, extras)).encode()).json()
        for name, extras in (("plain", [{}] * 8), ("answers", answers), ("labels", [{"label": 1}] * 8))}
    assert datasets["answers"]["manifest"]["splits"]["val"]["y"] == {"shape": [4], "dtype": "int64", "answers": True}
    assert _job(api, auth, model.json(), datasets["plain"], [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, model.json(), datasets["answers"], [{"method": "ptq"}])[0] == 201
    for model_json, dataset, expected in [
        (model.json(), datasets["labels"], "a question-answering model is labelled with answers, not 'label'"),
        (classifier.json(), datasets["answers"], "rows give answers, which label an extractive question-answering"),
    ]:
        status, text = _job(api, auth, model_json, dataset, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def test_a_multiple_choice_folder_keeps_its_task_and_takes_rows_with_choices(api, auth, tmp_path):
    model = _upload(api, auth, "models", "mc.zip", zip_bytes(bert_folder(tmp_path / "mc", multiple_choice=True)))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "multiple-choice"
    classifier = _upload(api, auth, "models", "classifier.zip", zip_bytes(bert_folder(tmp_path / "classifier", 3)))
    rows = [{"split": split, "text": text} for split, texts in (("train", CORPUS[:4]), ("val", CORPUS[4:8]))
            for text in texts]
    extras = {"plain": [{}] * 8, "choices": [{"choices": ["the cat", "the dog", "the fox"]}] * 8,
              "labelled": [{"choices": ["the cat", "the dog", "the fox"], "label": index % 3} for index in range(8)]}
    datasets = {name: _upload(api, auth, "datasets", f"{name}.jsonl", "\n".join(
        json.dumps(row | extra) for row, extra in zip(rows, extra_rows)).encode()).json()
        for name, extra_rows in extras.items()}
    assert datasets["labelled"]["manifest"]["splits"]["val"]["choices"] == {"shape": [4, 3], "dtype": "str"}
    assert _job(api, auth, model.json(), datasets["choices"], [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, model.json(), datasets["labelled"], [{"method": "ptq"}], {"metric": "accuracy"})[0] == 201
    for model_json, dataset, expected in [
        (model.json(), datasets["plain"], "a multiple-choice model scores candidate answers: give every row"),
        (classifier.json(), datasets["choices"], "rows give 'choices', the candidate answers a multiple-choice"),
    ]:
        status, text = _job(api, auth, model_json, dataset, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def _array_dataset(api, auth, name: str, inputs: np.ndarray, classes: int | None) -> dict:
    """An uploaded .npz whose train and val splits are `inputs`, val labelled with classes below `classes` (None:
    unlabelled)."""
    buffer = io.BytesIO()
    labels = {} if classes is None else {"val.y": np.arange(len(inputs)) % classes}
    np.savez(buffer, **{"train.x": inputs, "val.x": inputs, **labels})
    response = _upload(api, auth, "datasets", f"{name}.npz", buffer.getvalue())
    assert response.status_code == 201, response.text
    return response.json()


def test_a_video_classifier_folder_takes_clips_of_its_frame_count(api, auth, tmp_path):
    from tests.hf_folders import video_folder

    model = _upload(api, auth, "models", "videomae.zip", zip_bytes(video_folder(tmp_path / "videomae")))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "video-classification"
    rng = np.random.default_rng(0)
    clips = _array_dataset(api, auth, "clips", rng.integers(0, 256, (8, 4, 40, 48, 3), dtype=np.uint8), 3)
    assert _job(api, auth, model.json(), clips, [{"method": "ptq"}])[0] == 201
    for name, inputs, expected in [
        ("long", rng.integers(0, 256, (8, 6, 32, 32, 3), dtype=np.uint8), "uint8 clips for this model are [N, 4, H, W"),
        ("images", rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), "uint8 clips for this model are [N, 4, H, W"),
    ]:
        status, text = _job(api, auth, model.json(), _array_dataset(api, auth, name, inputs, 3), [{"method": "ptq"}])
        assert status == 422 and expected in text, text


@pytest.mark.parametrize("head, task", [("xvector", "audio-xvector"), ("frames", "audio-frame-classification")])
def test_speaker_heads_keep_their_task(api, auth, tmp_path, head, task):
    from tests.hf_folders import audio_folder

    model = _upload(api, auth, "models", f"{head}.zip", zip_bytes(audio_folder(tmp_path / head, head=head)))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == task
    waveforms = np.random.default_rng(0).normal(size=(8, 1600)).astype(np.float32)
    assert _job(api, auth, model.json(), _array_dataset(api, auth, "audio", waveforms, None), [{"method": "ptq"}])[0] \
        == 201
    if head == "xvector":  # speaker embeddings: class labels mean nothing for them
        status, text = _job(api, auth, model.json(), _array_dataset(api, auth, "labelled", waveforms, 3),
                            [{"method": "ptq"}])
        assert status == 422 and "remove ['val.y']" in text, text


def test_an_image_restorer_takes_images_of_any_one_size_and_no_labels(api, auth, tmp_path):
    from tests.hf_folders import super_resolution_folder

    model = _upload(api, auth, "models", "swin2sr.zip", zip_bytes(super_resolution_folder(tmp_path / "swin2sr")))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "image-to-image"
    images = np.random.default_rng(0).integers(0, 256, (8, 20, 24, 3), dtype=np.uint8)
    assert _job(api, auth, model.json(), _array_dataset(api, auth, "images", images, None), [{"method": "ptq"}])[0] \
        == 201
    status, text = _job(api, auth, model.json(), _array_dataset(api, auth, "labelled", images, 2), [{"method": "ptq"}])
    assert status == 422 and "an image-to-image job compares each image" in text, text


def test_time_series_folders_take_windows_at_their_context_length(api, auth, hf, tmp_path):
    from tests.hf_folders import series_folder

    forecaster = _upload(api, auth, "models", "patchtst.zip",
                         zip_bytes(series_folder(tmp_path / "patchtst", "time-series-forecasting")))
    classifier = _upload(api, auth, "models", "mixer.zip", zip_bytes(series_folder(
        tmp_path / "mixer", "time-series-classification", "patchtsmixer")))
    assert forecaster.status_code == 201 and classifier.status_code == 201, (forecaster.text, classifier.text)
    assert (forecaster.json()["task"], classifier.json()["task"]) == ("time-series-forecasting",
                                                                      "time-series-classification")
    windows = np.random.default_rng(0).normal(size=(8, 32, 3)).astype(np.float32)
    assert _job(api, auth, forecaster.json(), _array_dataset(api, auth, "windows", windows, None),
                [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, classifier.json(), _array_dataset(api, auth, "classes", windows, 3),
                [{"method": "ptq"}])[0] == 201
    for model, dataset, expected in [
        (forecaster.json(), _array_dataset(api, auth, "short", windows[:, :16], None),
         "but the model input is past_values[N, 32, 3] float32"),
        (forecaster.json(), _array_dataset(api, auth, "future", windows, 3), "future values are not read: remove"),
        (classifier.json(), _array_dataset(api, auth, "many", windows, 5), "range over [0, 4] but the model has 3"),
        (forecaster.json(), hf["text"], "takes an .npz per split (<split>.x: windows of the series as floats"),
    ]:
        status, text = _job(api, auth, model, dataset, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def test_a_zero_shot_detector_takes_the_objects_it_looks_for_and_no_labels(api, auth, tmp_path):
    from tests.hf_folders import owl_folder

    model = _upload(api, auth, "models", "owlv2.zip", zip_bytes(owl_folder(tmp_path / "owlv2")))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "zero-shot-object-detection"
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    plain, labelled = (_array_dataset(api, auth, "images", images, None),
                       _array_dataset(api, auth, "labelled", images, 2))
    queries = {"candidate_labels": ["cat", "remote control"]}
    assert _job(api, auth, model.json(), plain, [{"method": "ptq"}], queries)[0] == 201
    for dataset, evaluation, expected in [
        (plain, {}, "looks for the objects the job names: set evaluation.candidate_labels"),
        (labelled, queries, "a zero-shot-object-detection job compares the compressed model's detections"),
        (plain, queries | {"output_kind": "logits"}, "folder's outputs are detections"),
    ]:
        status, text = _job(api, auth, model.json(), dataset, [{"method": "ptq"}], evaluation)
        assert status == 422 and expected in text, text


def test_a_matting_model_takes_images_with_their_trimaps(api, auth, hf, tmp_path):
    from tests.hf_folders import vitmatte_folder

    model = _upload(api, auth, "models", "vitmatte.zip", zip_bytes(vitmatte_folder(tmp_path / "vitmatte")))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "image-matting"
    rgba = np.random.default_rng(0).integers(0, 256, (8, 40, 56, 4), dtype=np.uint8)
    assert _job(api, auth, model.json(), _array_dataset(api, auth, "rgba", rgba, None), [{"method": "ptq"}])[0] == 201
    for dataset, expected in [
        (_array_dataset(api, auth, "rgb", rgba[..., :3].copy(), None), "uint8 images for this model are [N, H, W, 4]"),
        (_array_dataset(api, auth, "labelled", rgba, 2), "an image-matting job compares each alpha matte"),
        (hf["text"], "(<split>.x: uint8 images (ViTMatte's with their trimap as a fourth channel"),
    ]:
        status, text = _job(api, auth, model.json(), dataset, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def _patch_student_bytes(directory, width: int) -> bytes:
    """A .pt2 of a ViT-like student: 8x8 patches of 32x32 pixels embedded to `width`, plus a class token,
    [N, 17, width]."""
    import torch

    from compression.io import export_model, save_program

    class Patches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(3, width, 8, stride=8)
            self.cls = torch.nn.Parameter(torch.zeros(1, 1, width))

        def forward(self, pixel_values):
            tokens = self.embed(pixel_values).flatten(2).transpose(1, 2)
            return torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1)

    path = save_program(export_model(Patches().eval(), (torch.zeros(2, 3, 32, 32),)), directory / f"s{width}.pt2")
    return path.read_bytes()


def test_an_image_classifier_folder_takes_images_at_its_size(api, auth, tmp_path):
    vit = _upload(api, auth, "models", "vit.zip", zip_bytes(image_folder(tmp_path / "vit")))
    assert vit.status_code == 201, vit.text
    assert vit.json()["task"] == "image-classification"
    assert vit.json()["signature"]["inputs"] == [{"name": "pixel_values", "shape": [None, 3, 32, 32],
                                                  "dtype": "float32"}]
    bare = _upload(api, auth, "models", "resnet.zip", zip_bytes(image_folder(tmp_path / "resnet", "resnet",
                                                                             processor=None)))
    assert bare.status_code == 201, bare.text
    # A base model (ViTModel) is an image feature extractor: unlabelled images, its features compared.
    encoder = _upload(api, auth, "models", "vitmodel.zip", zip_bytes(image_folder(tmp_path / "base",
                                                                                feature_extraction=True)))
    assert encoder.status_code == 201 and encoder.json()["task"] == "image-feature-extraction", encoder.text
    assert encoder.json()["signature"]["outputs"] == [{"name": "last_hidden_state", "shape": [None, None, 32],
                                                       "dtype": "float32"}]

    def dataset(name: str, pixels: np.ndarray) -> dict:
        return _array_dataset(api, auth, name, pixels, classes=4)

    rng = np.random.default_rng(0)
    images = dataset("images", rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))  # channels-last, as PIL gives
    values = dataset("values", rng.normal(size=(8, 3, 32, 32)).astype(np.float32))
    text = _upload(api, auth, "datasets", "text.jsonl", jsonl_bytes({"train": CORPUS[:4]})).json()
    assert _job(api, auth, vit.json(), images, [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, vit.json(), values, [{"method": "ptq"}])[0] == 201
    unlabelled = _array_dataset(api, auth, "unlabelled", rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), None)
    assert _job(api, auth, encoder.json(), unlabelled, [{"method": "ptq"}])[0] == 201
    # A .pt2 student fixes the token count the folder's signature leaves open (its config does not give it): it
    # fits; one of another width does not.
    for width, expected in ((32, 201), (16, 422)):
        student = _upload(api, auth, "models", f"student{width}.pt2", _patch_student_bytes(tmp_path, width))
        status, detail = _job(api, auth, encoder.json(), unlabelled,
                              [{"method": "kd", "student": {"kind": "upload", "model_id": student.json()["id"]}}])
        assert status == expected, detail
    # A processor that resizes to the model's size takes images of any size (resized in the worker).
    sized = _upload(api, auth, "models", "sized.zip", zip_bytes(image_folder(
        tmp_path / "sized", processor={**VIT_PROCESSOR, "size": {"height": 32, "width": 32}})))
    large = dataset("large", rng.integers(0, 256, (8, 48, 40, 3), dtype=np.uint8))
    assert _job(api, auth, sized.json(), large, [{"method": "ptq"}])[0] == 201
    for model_json, data, expected in [
        (vit.json(), dataset("small", rng.integers(0, 256, (8, 28, 28, 3), dtype=np.uint8)),
         "holds 28x28 images but the model takes 32x32, which its processor's resize and crop do not make"),
        (vit.json(), dataset("layout", rng.integers(0, 256, (8, 32, 32, 4), dtype=np.uint8)),
         "uint8 images for this model are [N, H, W, 3] or [N, 3, H, W]"),
        (vit.json(), text, "an image-classification folder takes an .npz per split (<split>.x: uint8 images"),
        (bare.json(), images, "holds uint8 images, but the model folder has no preprocessor_config.json"),
        (encoder.json(), images, "an image-feature-extraction job compares the compressed model's features with "
                                 "the original's, and class labels mean nothing for features; remove ['val.y']"),
        (encoder.json(), text, "an image-feature-extraction folder takes an .npz per split (<split>.x: uint8 "
                               "images, or the pixel_values its image processor makes), not text"),
    ]:
        status, response = _job(api, auth, model_json, data, [{"method": "ptq"}])
        assert status == 422 and expected in response, response


def test_a_segmentation_folder_takes_images_with_or_without_masks(api, auth, tmp_path):
    model = _upload(api, auth, "models", "segformer.zip", zip_bytes(segformer_folder(tmp_path / "segformer")))
    assert model.status_code == 201 and model.json()["task"] == "semantic-segmentation", model.text
    assert model.json()["signature"]["outputs"][0]["shape"] == [None, None, None, 5]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)

    def dataset(name: str, masks: np.ndarray | None) -> dict:
        buffer = io.BytesIO()
        np.savez(buffer, **{"train.x": images, "val.x": images, **({} if masks is None else {"val.y": masks})})
        response = _upload(api, auth, "datasets", f"{name}.npz", buffer.getvalue())
        assert response.status_code == 201, response.text
        return response.json()

    masks = rng.integers(0, 5, (8, 64, 64)).astype(np.uint8)
    masks[:, :8] = 255  # unlabelled pixels
    assert _job(api, auth, model.json(), dataset("images", None), [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, model.json(), dataset("masks", masks), [{"method": "ptq"}])[0] == 201
    for data, expected in [(dataset("classes", np.arange(8) % 5), "labels are masks [N, H, W]"),
                           (dataset("wrong", masks.astype(np.int64) + 3), "ranges over [3, 258] but the model "
                                                                              "has 5 classes")]:
        status, text = _job(api, auth, model.json(), data, [{"method": "ptq"}])
        assert status == 422 and expected in text, text


def test_a_depth_folder_takes_unlabelled_images(api, auth, tmp_path):
    model = _upload(api, auth, "models", "depth.zip", zip_bytes(depth_anything_folder(tmp_path / "depth")))
    assert model.status_code == 201 and model.json()["task"] == "depth-estimation", model.text
    assert model.json()["signature"]["outputs"] == [{"name": "predicted_depth", "shape": [None, None, None],
                                                     "dtype": "float32"}]
    images = np.random.default_rng(0).integers(0, 256, (8, 56, 56, 3), dtype=np.uint8)
    assert _job(api, auth, model.json(), _array_dataset(api, auth, "images", images, None), [{"method": "ptq"}])[0] \
        == 201
    status, text = _job(api, auth, model.json(), _array_dataset(api, auth, "labelled", images, 3), [{"method": "ptq"}])
    assert status == 422 and "ground-truth depths are not read: remove ['val.y']" in text, text


def test_a_detector_folder_takes_unlabelled_images_and_is_judged_by_its_detections(api, auth, tmp_path):
    model = _upload(api, auth, "models", "detr.zip", zip_bytes(detr_folder(tmp_path / "detr")))
    assert model.status_code == 201 and model.json()["task"] == "object-detection", model.text
    assert model.json()["signature"]["outputs"] == [{"name": "detections", "shape": [None, None, 7],
                                                     "dtype": "float32"}]
    images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    unlabelled = _array_dataset(api, auth, "images", images, None)
    assert _job(api, auth, model.json(), unlabelled, [{"method": "ptq"}])[0] == 201
    for dataset, evaluation, expected in [
            (_array_dataset(api, auth, "labelled", images, 3), {}, "ground-truth boxes are not read: remove "
                                                                   "['val.y']"),
            (unlabelled, {"output_kind": "logits"}, "an object-detection folder's outputs are detections"),
            (unlabelled, {"metric": "top1_agreement"}, "metric 'top1_agreement' does not apply to detections")]:
        status, text = _job(api, auth, model.json(), dataset, [{"method": "ptq"}], evaluation)
        assert status == 422 and expected in text, text
    # its 'layers' student keeps decoder layers, of which this DETR has one
    layers = {"method": "kd", "student": {"kind": "layers", "keep": 1}}
    status, text = _job(api, auth, model.json(), unlabelled, [layers])
    assert status == 422 and "fewer layers than the model has (1); got keep 1 (an object-detection model's student " \
                             "keeps some of its decoder's layers)" in text, text


def test_a_zero_shot_image_classifier_takes_its_candidate_labels_in_the_job(api, auth, tmp_path):
    """CLIP with task zero-shot-image-classification: its scores are one per candidate label, which the job names
    (required; refused for any other model), and labels index them."""
    model = _upload(api, auth, "models", "clip.zip", zip_bytes(dual_encoder_folder(tmp_path / "clip")),
                    task="zero-shot-image-classification")
    assert model.status_code == 201 and model.json()["task"] == "zero-shot-image-classification", model.text
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    labelled = _array_dataset(api, auth, "labelled", images, 3)
    animals = {"candidate_labels": ["cat", "dog", "bird"]}
    assert _job(api, auth, model.json(), labelled, [{"method": "ptq"}], animals)[0] == 201
    for dataset, evaluation, expected in [
            (labelled, {}, "set evaluation.candidate_labels to them"),
            (labelled, {"candidate_labels": ["cat", "dog"]}, "labels in 'val.y' range over [0, 2] but the model has "
                                                            "2 outputs"),
            (labelled, {**animals, "hypothesis_template": "a photo of {0.__class__}"}, "hypothesis_template must "
                                                                                      "hold '{}' once")]:
        status, text = _job(api, auth, model.json(), dataset, [{"method": "ptq"}], evaluation)
        assert status == 422 and expected in text, text
    features = _upload(api, auth, "models", "clip.zip", zip_bytes(tmp_path / "clip"))
    assert features.json()["task"] == "image-feature-extraction", features.text
    status, text = _job(api, auth, features.json(), _array_dataset(api, auth, "images", images, None),
                        [{"method": "ptq"}], animals)
    assert status == 422 and "this model's classes are its own: remove them" in text, text


def test_an_audio_classifier_folder_takes_waveforms_or_its_features(api, auth, tmp_path):
    wav2vec2 = _upload(api, auth, "models", "w2v.zip", zip_bytes(audio_folder(tmp_path / "w2v")))
    ast = _upload(api, auth, "models", "ast.zip", zip_bytes(audio_folder(tmp_path / "ast",
                                                                         "audio-spectrogram-transformer")))
    for model in (wav2vec2, ast):
        assert model.status_code == 201 and model.json()["task"] == "audio-classification", model.text
    assert wav2vec2.json()["signature"]["inputs"] == [{"name": "input_values", "shape": [None, None],
                                                       "dtype": "float32"}]

    rng = np.random.default_rng(0)
    waveforms = _array_dataset(api, auth, "waves", rng.normal(size=(8, 1600)).astype(np.float32), classes=3)
    features = _array_dataset(api, auth, "fbank", rng.normal(size=(8, 64, 32)).astype(np.float32), classes=3)
    text = _upload(api, auth, "datasets", "text.jsonl", jsonl_bytes({"train": CORPUS[:4]})).json()
    assert _job(api, auth, wav2vec2.json(), waveforms, [{"method": "ptq"}])[0] == 201
    pcm = _array_dataset(api, auth, "pcm", rng.integers(-32768, 32767, (8, 1600)).astype(np.int16), classes=3)
    assert _job(api, auth, wav2vec2.json(), pcm, [{"method": "ptq"}])[0] == 201  # 16-bit PCM: scaled in the worker
    assert _job(api, auth, ast.json(), features, [{"method": "ptq"}])[0] == 201
    for model_json, data, expected in [
        (wav2vec2.json(), text, "an audio-classification folder takes an .npz per split (<split>.x: the waveforms"),
        (ast.json(), waveforms, "'train.x' has shape [8, 1600] but the model input is input_values[N, 64, 32]"),
        (ast.json(), _array_dataset(api, auth, "ints", rng.integers(0, 9, (8, 64, 32)).astype(np.int16), classes=3),
         "'train.x' has dtype int16 but the model input is input_values[N, 64, 32] float32"),
    ]:
        status, response = _job(api, auth, model_json, data, [{"method": "ptq"}])
        assert status == 422 and expected in response, response


def test_a_ctc_speech_recognizer_folder_takes_unlabelled_waveforms(api, auth, tmp_path):
    """Wav2Vec2ForCTC is a speech-recognition folder: judged against the original's outputs and transcripts, so
    class labels are refused with what to remove."""
    model = _upload(api, auth, "models", "ctc.zip", zip_bytes(ctc_folder(tmp_path / "ctc")))
    assert model.status_code == 201 and model.json()["task"] == "speech-recognition", model.text
    assert model.json()["signature"]["outputs"] == [{"name": "logits", "shape": [None, None, 32],
                                                     "dtype": "float32"}]
    rng = np.random.default_rng(0)
    waveforms = rng.normal(size=(8, 1600)).astype(np.float32)
    assert _job(api, auth, model.json(), _array_dataset(api, auth, "speech", waveforms, None),
                [{"method": "prune"}, {"method": "ptq"}])[0] == 201
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": waveforms, "val.x": waveforms, "val.transcript": np.array(["HELLO WORLD"] * 8)})
    transcribed = _upload(api, auth, "datasets", "transcribed.npz", buffer.getvalue())
    assert transcribed.status_code == 201, transcribed.text
    assert _job(api, auth, model.json(), transcribed.json(), [{"method": "ptq"}])[0] == 201
    bare = ctc_folder(tmp_path / "bare")
    for name in ("vocab.json", "tokenizer_config.json"):
        (bare / name).unlink()
    untokenized = _upload(api, auth, "models", "bare.zip", zip_bytes(bare)).json()
    text = _upload(api, auth, "datasets", "text.jsonl", jsonl_bytes({"train": CORPUS[:4]})).json()
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": waveforms, "val.x": rng.normal(size=(8, 3200)).astype(np.float32)})
    lengths = _upload(api, auth, "datasets", "lengths.npz", buffer.getvalue()).json()
    for model_json, data, expected in [
        (model.json(), lengths, "the job's splits hold inputs of different shapes (train [1600], val [3200], after "
                                "the batch): a Hugging Face folder's model is exported at one input shape"),
        (untokenized, transcribed.json(), "reference transcripts (['val.transcript']), but the model folder has no "
                                          "tokenizer files"),
        (model.json(), _array_dataset(api, auth, "labelled", waveforms, 3),
         "class labels mean nothing for it; remove ['val.y'] from the .npz"),
        (model.json(), text, "a speech-recognition folder takes an .npz per split (<split>.x: the waveforms at its "
                             "feature extractor's sampling rate, or the spectrogram features a spectrogram model "
                             "takes), not text"),
    ]:
        status, response = _job(api, auth, model_json, data, [{"method": "ptq"}])
        assert status == 422 and expected in response, response


def test_an_image_heads_problem_type_declares_its_labels(api, auth, tmp_path):
    """A multi-label or regression image classifier's config.json says what its .npz labels are, as a text
    classifier's does for its .jsonl: no evaluation.multi_label or output_kind to declare."""
    def model(name: str, classes: int, **fields) -> dict:
        response = _upload(api, auth, "models", f"{name}.zip", zip_bytes(image_folder(tmp_path / name, classes=classes,
                                                                                     **fields)))
        assert response.status_code == 201, response.text
        return response.json()

    tagger = model("tags", 4, problem_type="multi_label_classification")
    scorer = model("score", 1, problem_type="regression")
    plain = model("plain", 4)
    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(8, 3, 32, 32)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": pixels, "val.x": pixels, "val.y": rng.integers(0, 2, (8, 4))})
    matrix = _upload(api, auth, "datasets", "matrix.npz", buffer.getvalue()).json()
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": pixels, "val.x": pixels, "val.y": rng.uniform(1, 5, 8).astype(np.float32)})
    values = _upload(api, auth, "datasets", "values.npz", buffer.getvalue()).json()
    assert _job(api, auth, tagger, matrix, [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, scorer, values, [{"method": "ptq"}])[0] == 201
    status, text = _job(api, auth, plain, matrix, [{"method": "ptq"}])
    assert status == 422 and "set evaluation.multi_label to true" in text, text


def test_a_seq2seq_lm_folder_takes_text_with_or_without_targets(api, auth, hf, tmp_path):
    model = _upload(api, auth, "models", "t5.zip", zip_bytes(seq2seq_folder(tmp_path / "t5", "t5")))
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "seq2seq-lm"
    assert [t["name"] for t in model.json()["signature"]["inputs"]] == ["input_ids", "attention_mask",
                                                                       "decoder_input_ids"]
    rows = [{"split": split, "text": text} for split, texts in (("train", CORPUS[:4]), ("val", CORPUS[4:8]))
            for text in texts]
    targeted = _upload(api, auth, "datasets", "targets.jsonl", "\n".join(
        json.dumps(row | {"target": row["text"].upper()}) for row in rows).encode()).json()
    assert targeted["manifest"]["splits"]["val"]["target"] == {"shape": [4], "dtype": "str"}
    assert _job(api, auth, model.json(), targeted, [{"method": "ptq"}])[0] == 201
    assert _job(api, auth, model.json(), hf["text"], [{"method": "ptq"}])[0] == 201  # the upload's own output
    many = _upload(api, auth, "datasets", "many.jsonl", jsonl_bytes({"train": CORPUS[:4] * 257, "val": CORPUS[:4]}))
    for model_json, data, stages, expected in [
        (model.json(), many.json(), [{"method": "ptq"}], "split 'train' has 1,028 rows and no 'target'"),
        (model.json(), hf["labelled"], [{"method": "ptq"}], "label its rows with 'target'"),
        (hf["bert"], targeted, [{"method": "ptq"}], "this model is not one: remove 'target'"),
        (model.json(), hf["text"], [{"method": "kd", "student": {"kind": "layers", "keep": 2}}],
         "keeps fewer layers than the model has (2); got keep 2 (a seq2seq-lm model's student keeps some of its "
         "decoder's layers)"),
        (model.json(), hf["text"], [{"method": "llm_ptq"}], "llm_ptq quantizes a causal language model"),
    ]:
        status, text = _job(api, auth, model_json, data, stages)
        assert status == 422 and expected in text, text


def test_a_masked_lm_folder_is_features_by_default_and_fill_mask_on_request(api, auth, hf, tmp_path):
    folder = bert_folder(tmp_path / "mlm", masked_lm=True)
    assert _upload(api, auth, "models", "mlm.zip", zip_bytes(folder)).json()["task"] == "feature-extraction"
    model = _upload(api, auth, "models", "mlm.zip", zip_bytes(folder), task="fill-mask")
    assert model.status_code == 201, model.text
    assert model.json()["task"] == "fill-mask"
    assert model.json()["signature"]["outputs"][0]["shape"][:2] == [None, None]  # logits at every token
    # Unlabelled text: the worker masks it and labels the masked tokens, so accuracy is the default metric.
    assert _job(api, auth, model.json(), hf["text"], [{"method": "ptq"}], {"metric": "accuracy"})[0] == 201
    status, text = _job(api, auth, model.json(), hf["labelled"], [{"method": "ptq"}])
    assert status == 422 and "its rows take no 'label', 'tags' or 'answer'" in text, text
    encoder = _upload(api, auth, "models", "encoder.zip", zip_bytes(bert_folder(tmp_path / "encoder")),
                      task="fill-mask")
    assert encoder.status_code == 422 and "has no trained fill-mask head" in encoder.text, encoder.text


def test_transformers_pipeline_names_are_taken_for_the_task_they_run(api, auth, llama_dir, tmp_path):
    """A model card's pipeline_tag as the task: the model records the service's own name for it; speech recognition
    is the CTC task or the encoder-decoder one by what the checkpoint is."""
    for folder, alias, task in [
        (llama_dir, "text-generation", "causal-lm"),
        (bert_folder(tmp_path / "sst", 2), "text-classification", "sequence-classification"),
        (bert_folder(tmp_path / "nli", 3), "zero-shot-classification", "sequence-classification"),
        (bert_folder(tmp_path / "ner", 3, per_token=True), "ner", "token-classification"),
        (seq2seq_folder(tmp_path / "t5", "t5"), "translation", "seq2seq-lm"),
        (ctc_folder(tmp_path / "ctc"), "automatic-speech-recognition", "speech-recognition"),
        (whisper_folder(tmp_path / "whisper"), "automatic-speech-recognition", "speech-seq2seq"),
    ]:
        model = _upload(api, auth, "models", f"{alias}.zip", zip_bytes(folder), task=alias)
        assert model.status_code == 201 and model.json()["task"] == task, (alias, model.text)
    refused = _upload(api, auth, "models", "gpt.zip", zip_bytes(llama_dir), task="summarization")
    assert refused.status_code == 422 and "transformers has no seq2seq-lm model for model_type 'llama'" in refused.text


def test_a_speech_seq2seq_folder_takes_its_audio_with_or_without_transcripts(api, auth, tmp_path):
    """WhisperForConditionalGeneration is a speech-seq2seq folder: the .npz gives the audio alone (the worker makes
    the decoder's input), with transcripts or without (the upload's own output, for at most 1,024 examples)."""
    model = _upload(api, auth, "models", "whisper.zip", zip_bytes(whisper_folder(tmp_path / "whisper")))
    assert model.status_code == 201 and model.json()["task"] == "speech-seq2seq", model.text
    assert [t["name"] for t in model.json()["signature"]["inputs"]] == ["input_features", "decoder_input_ids"]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, WHISPER_BINS, WHISPER_FRAMES)).astype(np.float32)
    status, text = _job(api, auth, model.json(), _array_dataset(api, auth, "speech", features, None),
                        [LAYERS_KD, {"method": "ptq"}])
    assert status == 201, text
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": features, "val.x": features, "val.transcript": np.array(CORPUS[:8])})
    transcribed = _upload(api, auth, "datasets", "transcribed.npz", buffer.getvalue()).json()
    assert _job(api, auth, model.json(), transcribed, [{"method": "ptq"}])[0] == 201
    many = np.broadcast_to(features[:1], (1025, WHISPER_BINS, WHISPER_FRAMES))
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": many, "val.x": features, "val.transcript": np.array(CORPUS[:8])})
    untranscribed = _upload(api, auth, "datasets", "many.npz", buffer.getvalue()).json()
    frames = _array_dataset(api, auth, "short", features[:, :, :50], None)
    for data, stages, expected in [
        (_array_dataset(api, auth, "labelled", features, 2), [{"method": "ptq"}],
         "class labels mean nothing for it; remove ['val.y'] from the .npz"),
        (untranscribed, [{"method": "ptq"}], "split 'train' has 1,025 examples and no transcripts"),
        (frames, [{"method": "ptq"}], f"has shape [8, {WHISPER_BINS}, 50] but the model input is input_features"),
        (transcribed, [{"method": "kd", "student": {"kind": "layers", "keep": 2}}],
         "(a speech-seq2seq model's student keeps some of its decoder's layers)"),
    ]:
        status, text = _job(api, auth, model.json(), data, stages)
        assert status == 422 and expected in text, text


def test_an_image_to_text_folder_takes_its_images_with_or_without_reference_texts(api, auth, tmp_path):
    """A VisionEncoderDecoderModel (TrOCR, ViT-GPT2) is an image-to-text folder: the .npz gives the images alone
    (the worker makes the decoder's input), with reference texts or without (the upload's own output)."""
    model = _upload(api, auth, "models", "trocr.zip", zip_bytes(vision_encoder_decoder_folder(tmp_path / "trocr")))
    assert model.status_code == 201 and model.json()["task"] == "image-to-text", model.text
    assert [t["name"] for t in model.json()["signature"]["inputs"]] == ["pixel_values", "decoder_input_ids"]
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    assert _job(api, auth, model.json(), _array_dataset(api, auth, "images", images, None), [{"method": "ptq"}])[0] \
        == 201
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": images, "val.x": images, "val.transcript": np.array(CORPUS[:8])})
    described = _upload(api, auth, "datasets", "described.npz", buffer.getvalue()).json()
    assert _job(api, auth, model.json(), described, [LAYERS_KD, {"method": "ptq"}])[0] == 201
    for data, stages, expected in [
        (_array_dataset(api, auth, "labelled", images, 2), [{"method": "ptq"}],
         "an image-to-text model writes text: its job is measured against each split's reference texts"),
        (described, [{"method": "kd", "student": {"kind": "layers", "keep": 2}}],
         "(an image-to-text model's student keeps some of its decoder's layers)"),
    ]:
        status, text = _job(api, auth, model.json(), data, stages)
        assert status == 422 and expected in text, text
