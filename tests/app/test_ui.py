"""The dashboard's files: served without a key (they hold no data), locked down by headers, nothing else reachable."""

import pytest


def test_the_dashboard_page_and_its_scripts_are_served_with_a_strict_policy(api):
    assert api.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    page = api.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    script = api.get("/ui/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "location.hash" in script.text


@pytest.mark.parametrize("name", ["../router.py", "..%2Frouter.py", "router.py", "__init__.py", "missing.js"])
def test_only_the_shipped_static_files_are_reachable(api, name):
    response = api.get(f"/ui/static/{name}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_the_dashboard_is_not_part_of_the_api_schema(api):
    assert not [path for path in api.get("/openapi.json").json()["paths"] if path.startswith("/ui")]


def test_jobs_filter_by_model(api, auth, uploaded):
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}]}
    job = api.post("/v1/jobs", headers=auth, json=spec).json()
    listed = api.get(f"/v1/jobs?model_id={uploaded['model']['id']}", headers=auth).json()
    assert [item["id"] for item in listed["items"]] == [job["id"]]
    assert api.get("/v1/jobs?model_id=mdl_other", headers=auth).json()["total"] == 0
