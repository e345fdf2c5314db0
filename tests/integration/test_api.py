"""Every route and every error code of the HTTP API, on moto."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from batchscribe.repository import JobRepository
from batchscribe_cli.local import LocalContext
from harness.jobs import put_outputs, succeed_job
from tests.conftest import OWNER_A, OWNER_B, Stack, api_event, reset_caches
from tests.helpers import call, create

pytestmark = pytest.mark.usefixtures("aws_stack")


def policy_of(ticket: dict[str, Any]) -> dict[str, Any]:
    fields = ticket["fields"]
    return json.loads(base64.b64decode(fields["policy"]))


# ---- POST /jobs ----------------------------------------------------------------------


def test_create_returns_pending_job_and_a_pinned_presigned_post() -> None:
    job = create(size=12345, content_type="audio/mpeg", options={"language": "en", "formats": ["srt", "txt"]})

    assert job["status"] == "pending"
    assert len(job["job_id"]) == 32
    assert job["options"]["language"] == "en"
    assert job["options"]["formats"] == ["srt", "txt"]
    assert job["options"]["model"] is None  # the worker pool's configured model
    ticket = job["upload"]
    assert ticket["fields"]["key"].endswith(f"/{job['job_id']}/input")
    assert ticket["fields"]["key"].startswith("uploads/")
    assert ticket["fields"]["Content-Type"] == "audio/mpeg"
    conditions = policy_of(ticket)["conditions"]
    assert {"key": ticket["fields"]["key"]} in conditions
    assert {"Content-Type": "audio/mpeg"} in conditions
    assert ["content-length-range", 1, 12345] in conditions


def test_create_key_is_server_made_whatever_the_filename() -> None:
    job = create(filename="../../etc/passwd\x00.wav")
    assert job["upload"]["fields"]["key"].count("/") == 3
    assert ".." not in job["upload"]["fields"]["key"]
    assert job["input"]["filename"] == "passwd_.wav"


def test_content_type_is_normalized() -> None:
    job = create(content_type="Audio/MPEG; charset=binary")
    assert job["input"]["content_type"] == "audio/mpeg"


@pytest.mark.parametrize(
    "content_type", ["audio/wav", "audio/mp4", "audio/flac", "audio/ogg", "video/webm", "audio/aac"]
)
def test_common_media_types_are_accepted(content_type: str) -> None:
    assert create(content_type=content_type)["status"] == "pending"


def test_declared_size_over_the_limit_is_413(aws_stack: Stack) -> None:
    limit = int(aws_stack.env["BATCHSCRIBE_MAX_UPLOAD_BYTES"])
    status, body = call("POST", "/jobs", {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": limit + 1})
    assert status == 413
    assert body["error"]["code"] == "file_too_large"
    assert body["error"]["details"]["max_bytes"] == limit


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/pdf", "application/json"])
def test_unsupported_content_type_is_415(content_type: str) -> None:
    status, body = call("POST", "/jobs", {"filename": "a", "content_type": content_type, "size_bytes": 10})
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"
    assert "audio/wav" in body["error"]["details"]["supported"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filename": "a.wav", "content_type": "audio/wav"}, "size_bytes"),
        ({"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 0}, "size_bytes"),
        ({"filename": "a.wav", "content_type": "audio/wav", "size_bytes": "big"}, "size_bytes"),
        ({"content_type": "audio/wav", "size_bytes": 5}, "filename"),
        ({"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 5, "colour": "red"}, "colour"),
        (
            {
                "filename": "a.wav",
                "content_type": "audio/wav",
                "size_bytes": 5,
                "options": {"task": "summarize"},
            },
            "options.task",
        ),
        (
            {
                "filename": "a.wav",
                "content_type": "audio/wav",
                "size_bytes": 5,
                "options": {"formats": ["docx"]},
            },
            "options.formats.0",
        ),
        (
            {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 5, "options": {"formats": []}},
            "options.formats",
        ),
        (
            {
                "filename": "a.wav",
                "content_type": "audio/wav",
                "size_bytes": 5,
                "options": {"language": "english!"},
            },
            "options.language",
        ),
        (
            {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 5, "options": {"model": "../x"}},
            "options.model",
        ),
    ],
)
def test_invalid_body_is_400_with_the_field(body: dict[str, Any], field: str) -> None:
    status, resp = call("POST", "/jobs", body)
    assert status == 400
    assert resp["error"]["code"] == "invalid_request"
    assert field in [d["field"] for d in resp["error"]["details"]]


@pytest.mark.parametrize("raw", ["{not json", "[]", "null", ""])
def test_malformed_body_is_400(raw: str) -> None:
    status, resp = call("POST", "/jobs", raw)
    assert status == 400
    assert resp["error"]["code"] == "invalid_request"


def test_idempotency_key_returns_the_same_job() -> None:
    body = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 100}
    s1, first = call("POST", "/jobs", body, headers={"Idempotency-Key": "abc-1"})
    s2, again = call("POST", "/jobs", body, headers={"idempotency-key": "abc-1"})

    assert (s1, s2) == (201, 201)
    assert again["job_id"] == first["job_id"]
    assert again["upload"]["fields"]["key"] == first["upload"]["fields"]["key"]
    _, listing = call("GET", "/jobs")
    assert [j["job_id"] for j in listing["jobs"]] == [first["job_id"]]


def test_idempotency_key_is_per_owner() -> None:
    body = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 100}
    _, a = call("POST", "/jobs", body, headers={"Idempotency-Key": "same"}, owner=OWNER_A)
    _, b = call("POST", "/jobs", body, headers={"Idempotency-Key": "same"}, owner=OWNER_B)
    assert a["job_id"] != b["job_id"]


def test_idempotency_key_reused_with_another_body_is_409() -> None:
    call(
        "POST",
        "/jobs",
        {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 100},
        headers={"Idempotency-Key": "k"},
    )
    status, resp = call(
        "POST",
        "/jobs",
        {"filename": "b.wav", "content_type": "audio/wav", "size_bytes": 100},
        headers={"Idempotency-Key": "k"},
    )
    assert status == 409
    assert resp["error"]["code"] == "idempotency_key_reused"


# ---- GET /jobs/{id} ------------------------------------------------------------------


def test_get_returns_the_job() -> None:
    job = create()
    status, got = call("GET", f"/jobs/{job['job_id']}")
    assert status == 200
    assert got["job_id"] == job["job_id"]
    assert got["status"] == "pending"
    assert got["progress"] == 0 and got["attempt"] == 0
    assert got["created_at"].endswith("Z")
    assert got["result"] is None and got["error"] is None


@pytest.mark.parametrize("job_id", ["0" * 32, "not-a-job", "x" * 64])
def test_missing_job_is_404(job_id: str) -> None:
    status, resp = call("GET", f"/jobs/{job_id}")
    assert status == 404
    assert resp["error"]["code"] == "job_not_found"


def test_other_owners_job_is_404_exactly_like_a_missing_one() -> None:
    job = create(owner=OWNER_A)
    status, resp = call("GET", f"/jobs/{job['job_id']}", owner=OWNER_B)
    missing_status, missing = call("GET", f"/jobs/{'0' * 32}", owner=OWNER_B)
    assert status == missing_status == 404
    assert resp["error"]["code"] == missing["error"]["code"] == "job_not_found"
    assert call("POST", f"/jobs/{job['job_id']}/cancel", owner=OWNER_B)[0] == 404
    assert call("GET", f"/jobs/{job['job_id']}", owner=OWNER_A)[0] == 200


def test_succeeded_job_has_presigned_result_urls(aws_stack: Stack) -> None:
    import boto3

    job = create()
    repo = JobRepository(aws_stack.table)
    record = repo.get(job["job_id"])
    transcripts = {fmt: f"content {fmt}".encode() for fmt in ("json", "txt", "srt", "vtt")}
    outputs, log_key = put_outputs(boto3.client("s3"), aws_stack.bucket, record, transcripts, b"log line")
    succeed_job(repo, record.job_id, outputs, log_key, duration_seconds=12.5, compute_seconds=1.25, segments=3)

    status, got = call("GET", f"/jobs/{job['job_id']}")

    assert status == 200
    assert got["status"] == "succeeded" and got["progress"] == 100
    result = got["result"]
    assert result["language"] == "en" and result["duration_seconds"] == 12.5
    assert set(result["urls"]) == {"json", "txt", "srt", "vtt"}
    assert requests.get(result["urls"]["srt"], timeout=10).content == b"content srt"
    assert requests.get(result["log_url"], timeout=10).content == b"log line"


# ---- GET /jobs -----------------------------------------------------------------------


def test_list_is_newest_first_and_paginates() -> None:
    made = [create()["job_id"] for _ in range(5)]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query = {"limit": "2", **({"next_token": token} if token else {})}
        status, page = call("GET", "/jobs", query=query)
        assert status == 200
        assert len(page["jobs"]) <= 2
        seen += [j["job_id"] for j in page["jobs"]]
        pages += 1
        token = page["next_token"]
        if not token:
            break
    assert seen == list(reversed(made))
    assert pages >= 3


def test_list_filters_by_status() -> None:
    a, b, c = create(), create(), create()
    call("POST", f"/jobs/{b['job_id']}/cancel")
    _, cancelled = call("GET", "/jobs", query={"status": "cancelled"})
    _, pending = call("GET", "/jobs", query={"status": "pending", "limit": "1"})
    assert [j["job_id"] for j in cancelled["jobs"]] == [b["job_id"]]
    assert [j["job_id"] for j in pending["jobs"]] == [c["job_id"]]
    _, rest = call("GET", "/jobs", query={"status": "pending", "limit": "1", "next_token": pending["next_token"]})
    assert [j["job_id"] for j in rest["jobs"]] == [a["job_id"]]


def test_list_shows_only_the_callers_jobs() -> None:
    mine = create(owner=OWNER_A)
    create(owner=OWNER_B)
    _, listing = call("GET", "/jobs", owner=OWNER_A)
    assert [j["job_id"] for j in listing["jobs"]] == [mine["job_id"]]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"status": "done"}, "invalid_request"),
        ({"limit": "0"}, "invalid_request"),
        ({"limit": "1000"}, "invalid_request"),
        ({"limit": "many"}, "invalid_request"),
        ({"next_token": "garbage!!"}, "invalid_next_token"),
    ],
)
def test_list_bad_query_is_400(query: dict[str, str], code: str) -> None:
    status, resp = call("GET", "/jobs", query=query)
    assert status == 400
    assert resp["error"]["code"] == code


def test_next_token_cannot_reach_another_owners_jobs() -> None:
    for _ in range(3):
        create(owner=OWNER_B)
    _, page = call("GET", "/jobs", owner=OWNER_B, query={"limit": "1"})
    status, stolen = call("GET", "/jobs", owner=OWNER_A, query={"next_token": page["next_token"]})
    assert status == 200
    assert stolen["jobs"] == []


# ---- POST /jobs/{id}/cancel ----------------------------------------------------------


def test_cancel_then_cancel_again_is_409() -> None:
    job = create()
    status, cancelled = call("POST", f"/jobs/{job['job_id']}/cancel")
    assert status == 200
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    status, again = call("POST", f"/jobs/{job['job_id']}/cancel")
    assert status == 409
    assert again["error"]["code"] == "job_not_cancellable"
    assert again["error"]["details"]["status"] == "cancelled"


def test_cancel_missing_job_is_404() -> None:
    assert call("POST", f"/jobs/{'1' * 32}/cancel")[0] == 404


def test_unknown_route_is_404_with_the_error_shape() -> None:
    status, resp = call("DELETE", "/jobs")
    assert status == 404
    assert resp["error"]["code"] == "route_not_found"


# ---- CORS --------------------------------------------------------------------------------


def _raw(method: str, path: str, origin: str | None, body: Any = None) -> dict[str, Any]:
    from lambdas.api.handler import handler

    headers = {"Origin": origin} if origin else {}
    return dict(handler(api_event(method, path, body, headers=headers), LocalContext()))


def test_every_answer_carries_the_cors_header_for_a_browser(aws_stack: Stack) -> None:
    """Browsers read an answer only when it names their origin (or *): successes and errors alike."""
    ok = _raw("GET", "/jobs", "https://app.example.com")
    missing = _raw("GET", "/jobs/" + "0" * 32, "https://app.example.com")
    invalid = _raw("POST", "/jobs", "https://app.example.com", {"filename": "a.wav"})
    for resp, status in ((ok, 200), (missing, 404), (invalid, 400)):
        assert resp["statusCode"] == status
        assert resp["headers"]["Access-Control-Allow-Origin"] == "*"
        assert "Idempotent-Replayed" in resp["headers"]["Access-Control-Expose-Headers"]


def test_named_origins_are_echoed_and_others_get_no_cors_header(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHSCRIBE_CORS_ORIGINS", '["https://app.example.com"]')
    reset_caches()
    allowed = _raw("GET", "/jobs", "https://app.example.com")
    assert allowed["headers"]["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert allowed["headers"]["Vary"] == "Origin"
    other = _raw("GET", "/jobs", "https://evil.example.com")
    assert other["statusCode"] == 200 and "Access-Control-Allow-Origin" not in (other.get("headers") or {})
