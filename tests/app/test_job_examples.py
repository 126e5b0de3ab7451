from compression.specs import METHODS


def test_every_method_has_an_openapi_example_the_api_accepts(api):
    from core.jobs.spec import JobCreate
    body = api.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]
    examples = body["content"]["application/json"]["examples"]
    assert set(examples) == set(METHODS)
    for method, example in examples.items():
        spec = JobCreate.model_validate(example["value"])
        assert method in [stage.method for stage in spec.stages]
