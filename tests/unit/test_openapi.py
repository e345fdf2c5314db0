from scripts.gen_openapi import DOC, render


def test_openapi_document_is_current() -> None:
    assert DOC.exists(), "run `make openapi`"
    assert DOC.read_text() == render(), "docs/openapi.json is stale: run `make openapi` and commit it"


def test_openapi_lists_every_route_and_error_shape() -> None:
    import json

    doc = json.loads(render())
    assert set(doc["paths"]) == {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel"}
    assert {"get", "post"} == set(doc["paths"]["/jobs"])
    responses = doc["paths"]["/jobs"]["post"]["responses"]
    assert {"201", "400", "413", "415"} <= set(responses)
