"""Every error answers in the {"error", "detail"} shape with a 4xx status; inputs that used to reach the database
or int() unchecked (and came back as 500) are refused first."""

import logging

import pytest
from fastapi.testclient import TestClient

LIST_ROUTES = ["/v1/models", "/v1/datasets", "/v1/jobs"]
ID_ROUTES = [("get", "/v1/models/{}"), ("delete", "/v1/models/{}"), ("get", "/v1/datasets/{}"),
             ("delete", "/v1/datasets/{}"), ("get", "/v1/jobs/{}"), ("delete", "/v1/jobs/{}"),
             ("post", "/v1/jobs/{}/cancel"), ("get", "/v1/jobs/{}/artifacts"), ("get", "/v1/artifacts/{}")]


def _is_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    return body


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize("offset", [str(2**63), str(2**63 - 1), "9" * 5000, "-1"])
def test_list_offsets_beyond_the_database_integers_are_refused(api, auth, route, offset):
    _is_error(api.get(route, headers=auth, params={"offset": offset}), 422, "invalid_input")


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_the_largest_offset_allowed_gives_an_empty_page(api, auth, route):
    from app.core.pagination import MAX_OFFSET
    response = api.get(route, headers=auth, params={"offset": MAX_OFFSET})
    assert response.status_code == 200 and response.json()["items"] == []


@pytest.mark.parametrize("method, route", ID_ROUTES)
def test_a_nul_byte_in_an_id_is_a_400(api, auth, method, route):
    response = getattr(api, method)(route.format("mdl_%00x"), headers=auth)
    assert "NUL" in _is_error(response, 400, "bad_request")["detail"]


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_a_nul_byte_in_a_query_parameter_is_a_400(api, auth, route):
    _is_error(api.get(f"{route}?status=queued%00&limit=5", headers=auth), 400, "bad_request")


@pytest.mark.parametrize("method, route", ID_ROUTES)
def test_ids_that_cannot_exist_are_not_found_without_a_query(api, auth, method, route):
    response = getattr(api, method)(route.format("x" * 5000), headers=auth)
    _is_error(response, 404, "not_found")


def test_a_nul_byte_in_a_json_id_is_not_found(api, auth, uploaded):
    for field in ("model_id", "dataset_id", "parent_job_id"):
        spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
                "stages": [{"method": "ptq"}], field: "mdl_\u0000abc"}
        if field == "parent_job_id":
            spec["model_id"] = None
        detail = _is_error(api.post("/v1/jobs", headers=auth, json=spec), 422, "invalid_input")["detail"]
        assert f"{field}: " in detail and "not found" in detail


def test_a_number_too_long_for_int_in_a_json_body_is_a_400(api, auth):
    body = b'{"dataset_id": "ds_x", "model_id": "mdl_x", "stages": [{"method": "ptq"}], "seed": ' + b"9" * 5000 + b"}"
    response = api.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=body)
    assert "more than 4300 digits" in _is_error(response, 400, "bad_request")["detail"]


def test_malformed_json_and_a_missing_content_type_say_what_to_send(api, auth):
    broken = api.post("/v1/jobs", headers={**auth, "Content-Type": "application/json"}, content=b'{"stages": [')
    assert "not valid JSON" in _is_error(broken, 422, "invalid_input")["detail"]
    untyped = api.post("/v1/jobs", headers=auth, content=b'{"stages": []}')
    assert "Content-Type: application/json" in _is_error(untyped, 422, "invalid_input")["detail"]


def test_unknown_routes_and_methods_use_the_error_shape(api, auth):
    assert "/docs" in _is_error(api.get("/v2/nothing", headers=auth), 404, "not_found")["detail"]
    detail = _is_error(api.put("/v1/models", headers=auth), 405, "method_not_allowed")["detail"]
    assert detail == "PUT is not allowed on /v1/models; allowed: GET, POST"


def test_a_malformed_multipart_body_is_a_400(api, auth):
    response = api.post("/v1/models", headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz"},
                        content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"m.pt2\"\r\n")
    assert response.status_code in (400, 422), response.text
    assert set(response.json()) == {"error", "detail"}


def test_an_unhandled_exception_is_a_500_without_internals(backend, caplog):
    from app.main import create_app
    app = create_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals: /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR, "modelpress.api"):
        response = client.get("/boom")
    body = _is_error(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    incident = body["detail"].split("incident ")[1].split(")")[0]
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and "secret internals" in str(logged[0].exc_info[1])


@pytest.mark.parametrize("authorization, expected", [
    ("KEY", "holds a bare key"),
    ("Basic dXNlcjpwYXNz", "the scheme 'Basic'"),
    ("Token KEY", "the scheme 'Token'"),
    ("Bearer", "no key after 'Bearer'"),
    ("Bearer   ", "no key after 'Bearer'"),
])
def test_authorization_needs_the_bearer_scheme(api, auth, authorization, expected):
    key = auth["Authorization"].split()[1]
    response = api.get("/v1/models", headers={"Authorization": authorization.replace("KEY", key)})
    detail = _is_error(response, 401, "unauthorized")["detail"]
    assert expected in detail
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_bearer_is_case_insensitive_and_x_api_key_is_an_alternative(api, auth):
    key = auth["Authorization"].split()[1]
    assert api.get("/v1/models", headers={"Authorization": f"bearer {key}"}).status_code == 200
    assert api.get("/v1/models", headers={"X-API-Key": key}).status_code == 200


def test_openapi_describes_the_error_bodies_and_security(api):
    schema = api.get("/openapi.json").json()
    assert "HTTPValidationError" not in str(schema) and "ValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["securitySchemes"] == {
        "BearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
        "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                         "description": "Alternative to the Authorization header: X-API-Key: <API key>"}}
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")) and status != "503":
                    assert response["content"]["application/json"]["schema"] == error_body, (method, path, status)
            if path.startswith("/v1"):
                assert operation["security"] == [{"BearerKey": []}, {"ApiKeyHeader": []}], (method, path)
                assert {"400", "401"} <= set(responses), (method, path)
    uploads = [schema["paths"][p]["post"] for p in ("/v1/models", "/v1/datasets")]
    for upload in uploads:
        assert {"201", "409", "413", "415", "422", "429"} <= set(upload["responses"])
        assert "file" in upload["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert any(p["name"] == "Idempotency-Key" for p in upload["parameters"])
    assert {"201", "409", "413", "422", "429"} <= set(schema["paths"]["/v1/jobs"]["post"]["responses"])
    assert {"204", "404", "409"} <= set(schema["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"])
