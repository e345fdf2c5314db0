from scripts.gen_openapi import DOC, render


def test_openapi_document_is_current() -> None:
    assert DOC.exists(), "run `make openapi`"
    assert DOC.read_text() == render(), "docs/openapi.json is stale: run `make openapi` and commit it"


def test_openapi_lists_every_route_and_error_shape() -> None:
    import json

    doc = json.loads(render())
    assert set(doc["paths"]) == {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/multipart",
        "/jobs/{job_id}/multipart/complete",
        "/jobs/{job_id}/multipart/abort",
        "/jobs/{job_id}/input",
        "/models",
        "/admin/stats",
    }
    assert {"get", "post"} == set(doc["paths"]["/jobs"])
    responses = doc["paths"]["/jobs"]["post"]["responses"]
    assert {"201", "400", "413", "415"} <= set(responses)


def test_openapi_documents_what_each_route_answers_and_nothing_else() -> None:
    """Every operation has its success model; no 422 (validation answers 400); SigV4 on all."""
    import json

    doc = json.loads(render())
    gateway = {"403", "429"}  # API Gateway's own answers: bad signature, throttling
    expected = {
        ("/jobs", "post"): {"201", "400", "401", "409", "413", "415"} | gateway,
        ("/jobs", "get"): {"200", "400", "401"} | gateway,
        ("/jobs/{job_id}", "get"): {"200", "400", "401", "404"} | gateway,
        ("/jobs/{job_id}/cancel", "post"): {"200", "400", "401", "404", "409"} | gateway,
        ("/jobs/{job_id}/input", "get"): {"200", "400", "401", "404"} | gateway,
        ("/models", "get"): {"200", "400", "401"} | gateway,
        ("/jobs/{job_id}/multipart", "post"): {"200", "400", "401", "404", "409"} | gateway,
        ("/jobs/{job_id}/multipart/complete", "post"): {"200", "400", "401", "404", "409"} | gateway,
        ("/jobs/{job_id}/multipart/abort", "post"): {"200", "400", "401", "404", "409"} | gateway,
        ("/admin/stats", "get"): {"200", "400", "401"} | gateway,  # 403: without the stats policy
    }
    found = {(path, method): set(op["responses"]) for path, ops in doc["paths"].items() for method, op in ops.items()}
    assert found == expected
    for path, ops in doc["paths"].items():
        for op in ops.values():
            ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
            assert ok["content"]["application/json"]["schema"]["$ref"].startswith("#/components/schemas/"), path
    assert "HTTPValidationError" not in json.dumps(doc)
    assert doc["security"] == [{"sigv4": []}]
    assert doc["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    language = doc["components"]["schemas"]["JobOptions"]["properties"]["language"]
    assert language["enum"][0] == "auto" and "yue" in language["enum"] and "zz" not in language["enum"]
