import io
import json

import numpy as np
import pytest


def _queued_messages() -> int:
    from core.queue import CPU_QUEUE, get_celery
    with get_celery().connection_for_read() as connection:
        return connection.default_channel.queue_declare(CPU_QUEUE, passive=False, durable=True,
                                                        auto_delete=False).message_count


def _spec(uploaded, **overrides) -> dict:
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq", "calibration_samples": 64}], "evaluation": {"compile": False}}
    return {**spec, **overrides}


def _dataset(api, auth, **arrays) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    response = api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", buffer.getvalue())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_submit_stores_the_job_and_enqueues_it(api, auth, uploaded):
    before = _queued_messages()
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["error"] is None and job["attempts"] == 0
    stage = job["spec"]["stages"][0]
    assert (stage["method"], stage["calibration_split"], stage["calibration_samples"]) == ("ptq", "train", 64)
    assert _queued_messages() == before + 1
    assert api.get(f"/v1/jobs/{job['id']}", headers=auth).json()["id"] == job["id"]
    listed = api.get("/v1/jobs", headers=auth, params={"status": "queued", "limit": 1}).json()
    assert listed["total"] >= 1 and len(listed["items"]) == 1
    assert api.get("/v1/jobs", headers=auth, params={"status": "succeeded"}).json()["total"] == 0
    assert api.get("/v1/jobs", headers=auth, params={"status": "bogus"}).status_code == 422


def test_cancel_a_queued_job(api, auth, uploaded):
    job = api.post("/v1/jobs", headers=auth, json=_spec(uploaded)).json()
    cancelled = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    again = api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_a_model_used_by_a_queued_job_cannot_be_deleted(api, auth, uploaded):
    api.post("/v1/jobs", headers=auth, json=_spec(uploaded))
    response = api.delete(f"/v1/models/{uploaded['model']['id']}", headers=auth)
    assert response.status_code == 409 and "queued or running" in response.json()["detail"]


@pytest.mark.parametrize("change, expected", [
    ({"stages": [{"method": "magic"}]}, "stages.0"),
    ({"stages": [{"method": "ptq", "calibration_sampels": 5}]}, "calibration_sampels: Extra inputs"),
    ({"stages": [{"method": "ptq", "calibration_samples": 0}]}, "greater than or equal to 1"),
    ({"stages": []}, "at least 1"),
    ({"evaluation": {"split": "test"}}, "split 'test' is not in the dataset"),
    ({"stages": [{"method": "ptq", "calibration_split": "calib"}]}, "split 'calib' is not in the dataset"),
    ({"time_limit_s": 10**9}, "exceeds this service's maximum"),
    ({"model_id": None}, "exactly one of model_id"),
    ({"dataset_id": "ds_missing"}, "dataset_id: ds_missing not found"),
    ({"stages": [{"method": "ptq"}, {"method": "qat"}]}, "stage 1 (qat) cannot follow stage 0 (ptq)"),
    ({"stages": [{"method": "ptq", "smoothquant": {"alpha": 0.5}, "weights": {"bits": 4}}]},
     "smoothquant and extra_formats options apply to the default int8 recipe only"),
    ({"stages": [{"method": "ptq", "extra_formats": ["onnx_int8"], "weights": {"bits": 4}}]},
     "smoothquant and extra_formats options apply to the default int8 recipe only"),
    ({"stages": [{"method": "ptq", "extra_formats": ["tflite"]}]}, "Input should be 'onnx_int8' or 'aoti'"),
    ({"stages": [{"method": "ptq", "reduce_range": True, "weights": {"bits": 4}}]},
     "reduce_range applies to the default int8 recipe only"),
    ({"stages": [{"method": "quant_noise"}, {"method": "ipq"}, {"method": "prune"}]},
     "stage 2 (prune) cannot follow stage 1 (ipq)"),
    ({"evaluation": {"output_kind": "embeddings", "metric": "top1_agreement"}},
     "evaluation.metric 'top1_agreement' does not apply to embeddings outputs; use ['cosine', "
     "'similarity_spearman']"),
    ({"evaluation": {"metric": "f1"}}, "Input should be 'accuracy', 'top1_agreement', 'cosine'"),
    ({"evaluation": {"metric": "similarity_spearman", "max_samples": 2}}, "needs at least 3 examples"),
    ({"evaluation": {"metric": "score_spearman"}}, "evaluation.metric 'score_spearman' ranks one score per "
                                                   "example, but the model output is linear_1[N, 10] float32"),
    ({"stages": [{"method": "kd", "student": {"kind": "zoo", "architecture": "cnn"}}]},
     "Input should be 'mlp', 'small_cnn', 'resnet' or 'tiny_transformer'"),
    ({"stages": [{"method": "function_matching", "student": {"kind": "zoo", "architecture": "tiny_transformer"}}]},
     "stages.0.student: zoo architecture 'tiny_transformer' takes token ids [N, L], but the model's input is "
     "[N, 1, 8, 8] float; architectures that fit: ['mlp', 'small_cnn', 'resnet']"),
])
def test_jobs_bound_to_fail_are_refused(api, auth, uploaded, change, expected):
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, **change))
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def test_dataset_must_fit_the_model_inputs(api, auth, uploaded):
    wrong_shape = _dataset(api, auth, **{"train.x": np.zeros((4, 1, 9, 9), np.float32),
                                         "val.x": np.zeros((4, 1, 8, 8), np.float32)})
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=wrong_shape))
    assert response.status_code == 422
    assert "'train.x' has shape [4, 1, 9, 9] but the model input is input[N, 1, 8, 8] float32" in \
        response.json()["detail"]

    wrong_dtype = _dataset(api, auth, **{"train.x": np.zeros((4, 1, 8, 8), np.int64),
                                         "val.x": np.zeros((4, 1, 8, 8), np.float32)})
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=wrong_dtype))
    assert response.status_code == 422 and "has dtype int64" in response.json()["detail"]

    bad_labels = _dataset(api, auth, **{"train.x": np.zeros((2, 1, 8, 8), np.float32),
                                        "train.y": np.array([3, 12]), "val.x": np.zeros((2, 1, 8, 8), np.float32)})
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=bad_labels))
    assert response.status_code == 422
    assert "range over [3, 12] but the model has 10 outputs" in response.json()["detail"]

    unlabeled = _dataset(api, auth, **{"train.x": np.zeros((2, 1, 8, 8), np.float32),
                                       "val.x": np.zeros((2, 1, 8, 8), np.float32)})
    assert api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=unlabeled)).status_code == 201
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=unlabeled,
                                                             evaluation={"metric": "accuracy"}))
    assert response.status_code == 422
    assert "evaluation.metric 'accuracy' needs labels ('<split>.y') in the evaluation split" in \
        response.json()["detail"]


@pytest.mark.parametrize("x, hint", [
    (np.zeros((2, 8, 8, 1), np.float32), "looks channels-last: store it channels-first, x.transpose(0, 3, 1, 2) -> "
                                         "[2, 1, 8, 8]"),
    (np.zeros((2, 8, 9), np.float32), "has shape [2, 8, 9] but the model input is input[N, 1, 8, 8]"),
    (np.zeros((2, 1, 8, 8), np.uint8), "x.astype('float32') / 255"),
])
def test_common_layout_and_dtype_mistakes_are_named_with_the_fix(api, auth, uploaded, x, hint):
    dataset = _dataset(api, auth, **{"train.x": x, "val.x": np.zeros((2, 1, 8, 8), np.float32)})
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=dataset))
    assert response.status_code == 422 and hint in response.json()["detail"], response.text


def test_big_endian_arrays_float_labels_and_grayscale_without_channel_dim_fit_the_model(api, auth, uploaded):
    dataset = _dataset(api, auth, **{"train.x": np.zeros((2, 8, 8), ">f4"), "train.y": np.array([[9.0], [0.0]]),
                                     "val.x": np.zeros((2, 1, 8, 8), ">f8")})
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=dataset))
    assert response.status_code == 201, response.text


def test_parent_job_must_have_succeeded_and_not_end_in_a_final_format(api, auth, uploaded):
    job = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[{"method": "prune"}])).json()
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, model_id=None, parent_job_id=job["id"]))
    assert response.status_code == 422 and "is queued and has no model" in response.json()["detail"]
    quantized = api.post("/v1/jobs", headers=auth, json=_spec(uploaded)).json()
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, model_id=None, parent_job_id=quantized["id"]))
    assert response.status_code == 422 and "ended with ptq" in response.json()["detail"]


def test_openapi_lists_the_errors_and_examples(api):
    schema = api.get("/openapi.json").json()
    submit = schema["paths"]["/v1/jobs"]["post"]
    assert {"201", "401", "422"} <= set(submit["responses"])
    assert {"201", "413", "422"} <= set(schema["paths"]["/v1/models"]["post"]["responses"])
    assert {"200", "206", "404", "416"} <= set(schema["paths"]["/v1/artifacts/{artifact_id}"]["get"]["responses"])
    assert schema["components"]["schemas"]["JobCreate"]["examples"]


def test_an_uploaded_student_must_exist_and_fit(api, auth, uploaded, tmp_path):
    kd = {"method": "kd", "student": {"kind": "upload", "model_id": "mdl_nope"}}
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[kd]))
    assert response.status_code == 422 and "stages.0.student.model_id: mdl_nope not found" in response.json()["detail"]

    import torch

    from compression.io import export_model, save_program
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 10)).eval()
    path = save_program(export_model(mlp, (torch.zeros(2, 64),)), tmp_path / "mlp.pt2")
    flat = api.post("/v1/models", headers=auth, files={"file": ("mlp.pt2", path.read_bytes())}).json()
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[
        {"method": "kd", "student": {"kind": "upload", "model_id": flat["id"]}}]))
    assert response.status_code == 422
    assert "the student's inputs ['input[N, 64] float32'] differ from the model's" in response.json()["detail"]

    same = {"method": "kd", "student": {"kind": "upload", "model_id": uploaded["model"]["id"]}}
    assert api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[same])).status_code == 201


def test_a_float32_student_fits_a_bfloat16_model_but_not_one_of_other_inputs(api, auth, tmp_path):
    """Stages compute a half-precision model in float32, so a student's float outputs may be wider; its inputs
    must still be what the model takes."""
    import torch

    from compression.io import export_model, save_program

    def upload(model, example, name):
        path = save_program(export_model(model.eval(), (example,)), tmp_path / name)
        response = api.post("/v1/models", headers=auth, files={"file": (name, path.read_bytes())})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    ids = torch.zeros(2, 12, dtype=torch.int64)
    teacher = upload(torch.nn.Sequential(torch.nn.Embedding(50, 32), torch.nn.Flatten(), torch.nn.Linear(384, 4))
                     .to(torch.bfloat16), ids, "teacher.pt2")
    student = upload(torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(96, 4)),
                     ids, "student.pt2")
    dataset = _dataset(api, auth, **{"train.x": np.zeros((16, 12), np.int64), "val.x": np.zeros((16, 12), np.int64)})
    spec = {"model_id": teacher, "dataset_id": dataset, "evaluation": {"compile": False},
            "stages": [{"method": "kd", "student": {"kind": "upload", "model_id": student}}]}
    assert api.post("/v1/jobs", headers=auth, json=spec).status_code == 201
    narrow = upload(torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(96, 4)),
                    torch.zeros(2, 12, dtype=torch.int32), "narrow.pt2")
    spec["stages"][0]["student"]["model_id"] = narrow
    response = api.post("/v1/jobs", headers=auth, json=spec)
    assert response.status_code == 422 and "the student's inputs ['input[N, 12] int32']" in response.json()["detail"]


@pytest.mark.parametrize("change, expected", [
    ({"stages": [{"method": "ptq", "max_metric_drop": float("inf")}]}, "max_metric_drop: Input should be a finite"),
    ({"stages": [{"method": "kd", "student": {"kind": "input"}, "temperature": float("nan")}]},
     "temperature: Input should be a finite number"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
    ({"evaluation": {"compile": False, "latency_batch_sizes": list(range(1, 10))}}, "at most 8 items"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(api, auth, uploaded, change, expected):
    body = json.dumps(_spec(uploaded, **change))  # writes Infinity and NaN, as JavaScript clients can
    response = api.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=body)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert api.get("/v1/jobs", headers=auth).json()["total"] == 0


def _give_layers(model_id: str, layers: list[str]) -> None:
    """Record the layer names in the stored signature, as inspection does for models uploaded with them."""
    from core.db.models import Model
    from core.db.session import session_scope
    with session_scope() as session:
        model = session.get(Model, model_id)
        model.signature = {**model.signature, "layers": layers}


DIGITS_LAYERS = ["0", "1", "4", "5", "8", "10"]  # conv, bn, conv, bn, linear, linear of the example CNN


@pytest.mark.parametrize("stage, expected", [
    ({"method": "ptq", "include": ["layer*"]}, "stages.0.include: ['layer*'] match no layer of the model; its layers "
                                               "are ['0', '1', '4', '5', '8', '10']"),
    ({"method": "ptq", "exclude": ["1?"], "layer_bits": {"8": 4, "fc": 4}}, "stages.0.layer_bits: ['fc'] match no"),
    ({"method": "quant_noise", "exclude": ["4"]}, "stages.0.exclude: ['4'] match no weight of the model; its "
                                                  "weights are ['0.weight', '1.weight'"),
    ({"method": "ipq", "groups": [["0.*"], ["stem.*"]]}, "stages.0.groups: ['stem.*'] match no weight"),
    ({"method": "prune", "exclude": ["fc.weight"]}, "stages.0.exclude: ['fc.weight'] match no weight"),
    ({"method": "quantized_distillation", "skip": ["8.bias"]}, "stages.0.skip: ['8.bias'] match no weight"),
])
def test_layer_patterns_must_match_a_layer_of_the_model(api, auth, uploaded, stage, expected):
    _give_layers(uploaded["model"]["id"], DIGITS_LAYERS)
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[stage]))
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def _forget_layers(model_id: str) -> None:
    """Make the stored signature look like one recorded before signatures listed layers."""
    from core.db.models import Model
    from core.db.session import session_scope
    with session_scope() as session:
        model = session.get(Model, model_id)
        model.signature = {key: value for key, value in model.signature.items() if key != "layers"}


def test_uploads_record_the_layers_the_patterns_are_checked_against(uploaded):
    assert uploaded["model"]["signature"]["layers"] == DIGITS_LAYERS


def test_patterns_matching_layers_are_accepted_and_old_signatures_are_not_checked(api, auth, uploaded):
    stages = [{"method": "prune", "exclude": ["0.weight"]},
              {"method": "ptq", "include": ["*"], "exclude": ["10"], "layer_bits": {"[48]": 4}}]
    _forget_layers(uploaded["model"]["id"])
    assert api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[{"method": "ptq", "include": ["nope"]}])
                    ).status_code == 201  # stored before signatures recorded layers: nothing to check against
    _give_layers(uploaded["model"]["id"], DIGITS_LAYERS)
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=stages))
    assert response.status_code == 201, response.text


def test_patterns_after_a_new_student_are_left_to_the_worker(api, auth, uploaded):
    _give_layers(uploaded["model"]["id"], DIGITS_LAYERS)
    stages = [{"method": "kd", "student": {"kind": "zoo", "architecture": "small_cnn"}},
              {"method": "ptq", "include": ["features.*"]}]
    assert api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=stages)).status_code == 201
    stages[0] = {"method": "kd", "student": {"kind": "input"}}
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[{"method": "prune"}, *stages]))
    assert response.status_code == 422 and "stages.2.include: ['features.*'] match no" in response.json()["detail"]


def test_many_layers_are_listed_in_part(api, auth, uploaded):
    _give_layers(uploaded["model"]["id"], [f"blocks.{i}.fc" for i in range(100)])
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, stages=[{"method": "ptq",
                                                                                 "include": ["head"]}]))
    assert response.status_code == 422 and "'blocks.39.fc'] and 60 more" in response.json()["detail"]


def test_a_webhook_is_accepted_and_its_secret_never_echoed(api, auth, uploaded):
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}], "webhook": {"url": "https://hooks.example.com/mp", "secret": "s" * 20}}
    created = api.post("/v1/jobs", headers=auth, json=spec)
    assert created.status_code == 201, created.text
    fetched = api.get(f"/v1/jobs/{created.json()['id']}", headers=auth).json()
    for body in (created.json(), fetched):
        assert body["webhook"] == {"url": "https://hooks.example.com/mp", "status": "pending", "attempts": 0}
        assert "s" * 20 not in str(body)


@pytest.mark.parametrize(("webhook", "message"), [
    ({"url": "ftp://hooks.example.com/", "secret": "s" * 20}, "http:// or https://"),
    ({"url": "https://u:p@hooks.example.com/", "secret": "s" * 20}, "credentials"),
    ({"url": "https://hooks.example.com/", "secret": "short"}, "at least 16 characters"),
])
def test_bad_webhooks_are_refused(api, auth, uploaded, webhook, message):
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}], "webhook": webhook}
    response = api.post("/v1/jobs", headers=auth, json=spec)
    assert response.status_code == 422 and message in response.text


def test_the_job_response_lists_the_quality_warnings(api, auth, uploaded):
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope
    job = api.post("/v1/jobs", headers=auth, json=_spec(uploaded)).json()
    assert job["warnings"] == []
    warning = "stage 0 (ipq): quality collapsed: top1_agreement 0.20 against the upload's 100.00"
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(
            status="failed", metrics={"baseline": {"metric_points": 100.0}, "stages": [], "warnings": [warning]}))
    shown = api.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert shown["warnings"] == [warning] and shown["metrics"]["baseline"]["metric_points"] == 100.0
    schema = api.get("/openapi.json").json()["components"]["schemas"]
    assert "warnings" in schema["JobOut"]["properties"]


def test_a_job_for_a_kind_no_live_worker_serves_is_queued_with_the_reason(api, auth, uploaded):
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, resources={"device": "gpu"}))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == "gpu"
    assert "no live worker consumes queue 'gpu'" in job["waiting_reason"]
    api.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)


def test_a_job_no_worker_of_a_fixed_fleet_can_fit_is_refused(api, auth, uploaded, monkeypatch):
    import uuid

    from core import workers
    from core.config import get_settings
    name = f"fleet-{uuid.uuid4().hex[:6]}@test"
    workers.register(name, "cpu", 2 * 1024**3, ["cpu"], 1)
    try:
        # Larger than any machine, so no other worker registered in this test session fits it either.
        too_large = _spec(uploaded, resources={"device": "cpu", "memory_bytes": 100 * 1024**4})
        accepted = api.post("/v1/jobs", headers=auth, json=too_large)  # more workers may come: it waits
        assert accepted.status_code == 201 and "102400.0 GiB" in accepted.json()["waiting_reason"]
        api.post(f"/v1/jobs/{accepted.json()['id']}/cancel", headers=auth)
        monkeypatch.setattr(get_settings(), "worker_fleet_fixed", True)
        refused = api.post("/v1/jobs", headers=auth, json=too_large)
        assert refused.status_code == 422 and name in refused.json()["detail"], refused.text
        assert api.post("/v1/jobs", headers=auth, json=_spec(uploaded, resources={"device": "cpu"})
                        ).status_code == 201
    finally:
        workers.unregister(name)


def test_a_tenant_priority_is_kept_on_the_job(api, example_files, monkeypatch):
    import uuid

    from core.config import get_settings
    from core.db.models import Job
    from core.db.session import session_scope
    from tests.app.conftest import new_key
    tenant = f"vip-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(get_settings(), "tenant_priorities", {tenant: 9})
    headers = {"Authorization": f"Bearer {new_key(tenant)}"}
    model_path, dataset_path = example_files
    ids = {kind: api.post(f"/v1/{kind}s", headers=headers, files={"file": (path.name, path.read_bytes())}
                          ).json()["id"] for kind, path in (("model", model_path), ("dataset", dataset_path))}
    job = api.post("/v1/jobs", headers=headers, json=_spec({kind: {"id": i} for kind, i in ids.items()}))
    assert job.status_code == 201, job.text
    api.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=headers)
    with session_scope() as session:
        assert session.get(Job, job.json()["id"]).priority == 9


def _model(api, auth, module, example, tmp_path) -> str:
    import torch

    from compression.io import export_model, save_program
    path = save_program(export_model(module.eval(), (torch.zeros(example),)), tmp_path / "m.pt2")
    response = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", path.read_bytes())})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_a_single_logit_binary_classifier_takes_zero_one_labels_and_no_others(api, auth, tmp_path):
    from torch import nn
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 1))
    model = _model(api, auth, cnn, (2, 1, 6, 6), tmp_path)
    x = np.zeros((4, 1, 6, 6), np.float32)
    binary = _dataset(api, auth, **{"train.x": x, "train.y": np.array([0, 1, 1, 0]), "val.x": x,
                                    "val.y": np.array([[1.0], [0.0], [1.0], [1.0]])})
    spec = {"model_id": model, "dataset_id": binary, "stages": [{"method": "qat"}],
            "evaluation": {"compile": False, "max_metric_drop": 2.0}}
    response = api.post("/v1/jobs", headers=auth, json=spec)
    assert response.status_code == 201, response.text
    three_classes = _dataset(api, auth, **{"train.x": x, "train.y": np.array([0, 1, 2, 0]), "val.x": x})
    response = api.post("/v1/jobs", headers=auth, json={**spec, "dataset_id": three_classes})
    assert response.status_code == 422
    assert ("labels in 'train.y' range over [0, 2] but the model has one output (a binary classifier's logit or "
            "probability), whose labels are 0 or 1") in response.json()["detail"]


def test_a_multi_label_matrix_needs_a_multi_label_model_of_its_width(api, auth, uploaded, tmp_path):
    from torch import nn
    model = _model(api, auth, nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Sigmoid()), (2, 8),
                   tmp_path)
    x, labels = np.zeros((3, 8), np.float32), np.array([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]], np.uint8)
    dataset = _dataset(api, auth, **{"train.x": x, "train.y": labels, "val.x": x, "val.y": labels})
    spec = {"model_id": model, "dataset_id": dataset, "stages": [{"method": "prune", "finetune": {"steps": 5}}],
            "evaluation": {"compile": False}}
    # The program ends in a sigmoid: independent probabilities, multi-label without saying so.
    sigmoid = api.post("/v1/jobs", headers=auth, json=spec)
    assert sigmoid.status_code == 201, sigmoid.text
    logits = _model(api, auth, nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), (2, 8), tmp_path)
    undeclared = api.post("/v1/jobs", headers=auth, json={**spec, "model_id": logits})
    assert undeclared.status_code == 422 and "set evaluation.multi_label to true" in undeclared.json()["detail"]
    response = api.post("/v1/jobs", headers=auth, json={**spec, "model_id": logits,
                                                         "evaluation": {"compile": False, "multi_label": True}})
    assert response.status_code == 201, response.text
    for declared in ({"output_kind": "sigmoid"}, {"multi_label": True, "max_metric_drop": 1.0}):
        response = api.post("/v1/jobs", headers=auth, json={**spec, "evaluation": {"compile": False, **declared}})
        assert response.status_code == 201, response.text
    narrow = _dataset(api, auth, **{"train.x": x, "train.y": labels[:, :3], "val.x": x})
    response = api.post("/v1/jobs", headers=auth, json={**spec, "dataset_id": narrow,
                                                         "evaluation": {"multi_label": True}})
    assert response.status_code == 422
    assert "holds 3 labels per example but the model output" in response.json()["detail"]
    # A one-hot matrix for a softmax classifier (the digits CNN) is still refused with the argmax hint.
    digits_x = np.zeros((2, 1, 8, 8), np.float32)
    one_hot = _dataset(api, auth, **{"train.x": digits_x, "train.y": np.eye(10)[[3, 7]], "val.x": digits_x})
    response = api.post("/v1/jobs", headers=auth, json=_spec(uploaded, dataset_id=one_hot))
    assert response.status_code == 422 and "becomes y.argmax(axis=1)" in response.json()["detail"], response.text


def test_a_program_exported_without_a_dynamic_batch_is_refused_with_the_export_call_that_fixes_it(api, auth, tmp_path):
    import torch
    from torch import nn

    from compression.io import save_program

    class TwoInputs(nn.Module):
        def forward(self, pixels, scale):
            return pixels.flatten(1) * scale

    example = (torch.zeros(1, 1, 2, 2), torch.ones(1, 4))
    path = save_program(torch.export.export(TwoInputs(), example), tmp_path / "m.pt2")  # export's default: fixed
    response = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", path.read_bytes())})
    assert response.status_code == 201, response.text
    dataset = _dataset(api, auth, **{f"{split}.{name}": np.zeros((4, *shape), np.float32) for split in ("train", "val")
                                     for name, shape in (("pixels", (1, 2, 2)), ("scale", (4,)))})
    response = api.post("/v1/jobs", headers=auth, json={"model_id": response.json()["id"], "dataset_id": dataset,
                                                        "stages": [{"method": "ptq"}]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "model inputs pixels[1, 1, 2, 2] float32, scale[1, 4] float32 have a fixed batch size" in detail
    assert 'dynamic_shapes={"pixels": {0: batch}, "scale": {0: batch}}' in detail
