"""Fuzzing the API from its own document: schemathesis generates requests from
docs/openapi.json (valid ones and ones that break it) and sends them to the local stack over
real HTTP. No answer may be a 5xx, and every answer must be one the document declares for the
route, with the declared content type and body schema.

Two of schemathesis' checks do not apply to the local stack, and are left out on purpose:
- `ignored_auth`, and the document's SigV4 requirement: the local stack is the explicit local
  mode, whose HTTP server takes the caller from `X-Batchscribe-Owner` (tests/integration/
  test_security.py proves the handler itself answers 401 without an IAM identity);
- `positive_data_acceptance`: requests valid by the schema can still be refused by the rules
  the schema cannot say (an opaque `next_token` the API did not issue, a content type outside
  the supported list, a size over the deployment's limit); each such answer is a documented
  4xx, which the conformance checks verify."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from batchscribe_cli.client import OWNER_HEADER, Client
from batchscribe_cli.local import LocalConfig, LocalStack

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
EXAMPLES = 30  # per route and mode: 4 routes x 2 modes x 30 = 240 requests


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(LocalConfig(port=0, max_workers=0, data_dir=tmp_path_factory.mktemp("fuzz"), quiet=True)) as s:
        c = Client(s.url, owner="fuzz")
        for name in ("a.wav", 'q"uote.mp3', "會議.m4a"):
            c.request("POST", "/jobs", {"filename": name, "content_type": "audio/wav", "size_bytes": 1000})
        yield s


def local_mode_schema() -> Any:
    doc = json.loads(DOC.read_text())
    doc.pop("security")
    doc["components"].pop("securitySchemes")
    return schemathesis.openapi.from_dict(doc)


def fuzz(
    url: str, operation: Any, mode: GenerationMode, statuses: collections.Counter[tuple[str, str, int]]
) -> list[str]:
    """Send `EXAMPLES` generated requests for one route and mode; the failures found."""
    session = requests.Session()
    failures: list[str] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure is reproducible
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        try:
            response = case.call_and_validate(
                base_url=url,
                session=session,
                headers={OWNER_HEADER: "fuzz"},
                excluded_checks=[ignored_auth, positive_data_acceptance],
                timeout=10,
            )
        except (Exception, FailureGroup) as exc:
            failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
        else:
            statuses[(operation.label, mode.value, response.status_code)] += 1

    try:
        run()
    except Unsatisfiable:  # a route without inputs (GET /models) has no negative case to send
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def test_fuzzed_requests_get_no_5xx_and_only_documented_answers(stack: LocalStack) -> None:
    statuses: collections.Counter[tuple[str, str, int]] = collections.Counter()
    operations = [result.ok() for result in local_mode_schema().get_all_operations()]
    assert {op.label for op in operations} == {
        "POST /jobs",
        "GET /jobs",
        "GET /jobs/{job_id}",
        "GET /jobs/{job_id}/input",
        "POST /jobs/{job_id}/cancel",
        "POST /jobs/{job_id}/multipart",
        "POST /jobs/{job_id}/multipart/complete",
        "POST /jobs/{job_id}/multipart/abort",
        "GET /models",
        "GET /admin/stats",
    }

    failures = [
        f for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for f in fuzz(stack.url, op, mode, statuses)
    ]  # fmt: skip

    total = sum(statuses.values()) + len(failures)
    print(f"{total} requests: " + ", ".join(f"{k[0]} {k[1]} {k[2]}: {v}" for k, v in sorted(statuses.items())))
    assert total >= 300
    assert failures == []
    assert not [k for k in statuses if k[2] >= 500]


def test_successful_answers_conform_to_the_document(stack: LocalStack) -> None:
    """The fuzzer rarely makes a valid create; these do, and each answer is checked against the
    document too: 201 create, 200 get, list and cancel, and the errors of a real job."""
    schema = local_mode_schema()
    headers = {OWNER_HEADER: "fuzz", "Content-Type": "application/json"}

    def call(method: str, path: str, status: int, **kw: Any) -> Any:
        case = schema[path][method].Case(headers=headers, **kw)
        response = case.call(base_url=stack.url)
        case.validate_response(response, excluded_checks=[ignored_auth, positive_data_acceptance])
        assert response.status_code == status, response.text
        return response.json()

    body = {"filename": "talk.mp3", "content_type": "audio/mpeg", "size_bytes": 1234, "options": {"language": "en"}}
    job = call("POST", "/jobs", 201, body=body)
    job_id = {"job_id": job["job_id"]}
    call("GET", "/jobs/{job_id}", 200, path_parameters=job_id)
    assert call("GET", "/jobs/{job_id}/input", 404, path_parameters=job_id)["error"]["code"] == "input_not_found"
    call("GET", "/jobs", 200, query={"limit": 2})
    call("GET", "/models", 200)
    ticket = call("POST", "/jobs/{job_id}/multipart", 200, path_parameters=job_id)
    assert ticket["part_count"] == 1 and ticket["uploaded"] == []
    call("POST", "/jobs/{job_id}/multipart/abort", 200, path_parameters=job_id)
    call("POST", "/jobs/{job_id}/cancel", 200, path_parameters=job_id)
    assert call("POST", "/jobs/{job_id}/cancel", 409, path_parameters=job_id)["error"]["code"] == "job_not_cancellable"
    assert call("POST", "/jobs", 413, body={**body, "size_bytes": 10**12})["error"]["code"] == "file_too_large"
    assert (
        call("POST", "/jobs", 400, body={**body, "options": {"language": "zz"}})["error"]["code"] == "invalid_request"
    )
