"""The bad-input matrix: every malformed request to the API, and every bad upload the intake
can see, gets its stable code; none gets a 500, and no job is left waiting with nothing that
will ever move it (a pending or queued job always carries a sweep deadline).

The media cases (text named .wav, truncated mp3, silence, ...) are the worker's: test_worker.py."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from batchscribe import keys
from batchscribe.models import JobStatus
from batchscribe.repository import JobRepository
from batchscribe.settings import ApiSettings
from tests.conftest import OWNER_A, OWNER_B, Stack, reset_caches
from tests.helpers import call, create, deliver_uploads, post_upload, receive_all

pytestmark = pytest.mark.usefixtures("aws_stack")

VALID = {"filename": "talk.wav", "content_type": "audio/wav", "size_bytes": 1000}


def body(**changes: Any) -> dict[str, Any]:
    out = {**VALID, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def fields_of(resp: dict[str, Any]) -> list[str]:
    return [d["field"] for d in resp["error"].get("details") or []]


# ---- the request body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[]", "null", "", '"a string"', "42", '{"filename":', "\x00", '{"a": 1}' * 2, "{" * 10_000],
    ids=["broken", "array", "null", "empty", "string", "number", "truncated", "nul", "two-objects", "deep"],
)
def test_malformed_json_is_400_invalid_request(raw: str) -> None:
    status, resp = call("POST", "/jobs", raw)
    assert (status, resp["error"]["code"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        # missing and extra fields
        (body(filename=...), "filename"),
        (body(content_type=...), "content_type"),
        (body(size_bytes=...), "size_bytes"),
        (body(colour="red"), "colour"),
        (body(options={"beam_size": 5}), "options.beam_size"),
        # wrong types: strict at the boundary, nothing is coerced
        (body(size_bytes="1000"), "size_bytes"),
        (body(size_bytes=True), "size_bytes"),
        (body(size_bytes=1000.0), "size_bytes"),
        (body(size_bytes=1000.5), "size_bytes"),
        (body(size_bytes=None), "size_bytes"),
        (body(size_bytes=[1000]), "size_bytes"),
        (body(filename=123), "filename"),
        (body(filename=["a.wav"]), "filename"),
        (body(content_type={"type": "audio/wav"}), "content_type"),
        (body(options="en"), "options"),
        (body(options={"word_timestamps": "yes"}), "options.word_timestamps"),
        (body(options={"word_timestamps": 1}), "options.word_timestamps"),
        (body(options={"formats": "txt"}), "options.formats"),
        (body(options={"language": 5}), "options.language"),
        (body(options={"initial_prompt": 5}), "options.initial_prompt"),
        (body(options={"task": True}), "options.task"),
        # sizes
        (body(size_bytes=0), "size_bytes"),
        (body(size_bytes=-1), "size_bytes"),
        (body(size_bytes=-(2**63)), "size_bytes"),
        # languages: Whisper's codes or auto, exactly
        (body(options={"language": "zz"}), "options.language"),
        (body(options={"language": "english"}), "options.language"),
        (body(options={"language": "EN"}), "options.language"),
        (body(options={"language": ""}), "options.language"),
        # filenames
        (body(filename=""), "filename"),
        (body(filename="x" * 1025), "filename"),
        # option values
        (body(options={"model": "../../etc/passwd"}), "options.model"),
        (body(options={"initial_prompt": "x" * 1001}), "options.initial_prompt"),
        (body(options={"formats": []}), "options.formats"),
    ],
    ids=lambda v: json.dumps(v)[:60] if isinstance(v, dict) else v,
)
def test_invalid_body_is_400_with_the_field(request_body: dict[str, Any], field: str) -> None:
    status, resp = call("POST", "/jobs", request_body)
    assert status == 400, resp
    assert resp["error"]["code"] == "invalid_request"
    assert field in fields_of(resp), resp


@pytest.mark.parametrize("size", [10**12, 2**63, 10**30])
def test_huge_declared_sizes_are_413(size: int) -> None:
    status, resp = call("POST", "/jobs", body(size_bytes=size))
    assert (status, resp["error"]["code"]) == (413, "file_too_large")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-sh",
        "application/octet-stream",
        "image/svg+xml",
        "text/html; charset=utf-8",
        "audio/../../etc/passwd",
        "audio/wav\r\nX-Injected: 1",
        "audio/*",
        "*/*",
        "audio/wav2",
    ],
)
def test_spoofed_or_unsupported_content_types_are_415(content_type: str) -> None:
    status, resp = call("POST", "/jobs", body(content_type=content_type))
    assert (status, resp["error"]["code"]) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\a.wav", "a.wav"),
        ("a\x00b.wav", "a_b.wav"),
        ('say "hi"; filename=evil.exe.wav', 'say "hi"; filename=evil.exe.wav'),
        ("a\r\nContent-Type: text/html.wav", "html.wav"),
        ("x" * 1000 + ".wav", "x" * 255),
        ("会议记录 — été.wav", "会议记录 — été.wav"),
        ("...", "upload"),
        ("\u202egnp.wav", "_gnp.wav"),
    ],
    ids=["dotdot", "backslashes", "nul", "quotes", "crlf", "1000-chars", "unicode", "dots", "rtl-override"],
)
def test_any_filename_is_metadata_only(aws_stack: Stack, filename: str, stored: str) -> None:
    """A filename never reaches a key, a path or a header as it is: the key is server-made, the
    stored name has no path or control characters."""
    job = create(filename=filename)
    assert keys.parse_upload_key(job["upload"]["fields"]["key"]) is not None
    assert job["input"]["filename"] == stored
    assert all(ord(c) >= 32 for c in job["input"]["filename"])


def test_an_english_only_deployment_refuses_other_languages(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ApiSettings.env_name("default_model"), "tiny.en")
    monkeypatch.setenv(ApiSettings.env_name("small_job_model"), "large-v3")  # served, for small uploads
    monkeypatch.setenv(ApiSettings.env_name("small_job_max_bytes"), "5000")
    reset_caches()

    status, resp = call("POST", "/jobs", body(options={"language": "de"}))
    assert (status, resp["error"]["code"]) == (400, "unsupported_language")
    assert resp["error"]["details"]["model"] == "tiny.en"
    for language in ("en", "auto"):
        assert call("POST", "/jobs", body(options={"language": language}))[0] == 201
    # a multilingual model chosen for the job takes any language
    assert call("POST", "/jobs", body(options={"language": "de", "model": "large-v3"}))[0] == 201


def test_an_english_only_model_chosen_for_the_job_refuses_other_languages() -> None:
    """Whatever the deployment's model, `model: base.en` with `fr` cannot work."""
    status, resp = call("POST", "/jobs", body(options={"language": "fr", "model": "base.en"}))
    assert (status, resp["error"]["code"]) == (400, "unsupported_language")
    assert call("POST", "/jobs", body(options={"language": "fr"}))[0] == 201  # default model: multilingual


def test_an_english_only_model_refuses_to_translate(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Translation is into English: an English-only model would hand back the English text."""
    monkeypatch.setenv(ApiSettings.env_name("default_model"), "tiny.en")
    monkeypatch.setenv(ApiSettings.env_name("small_job_model"), "large-v3")  # served, for small uploads
    monkeypatch.setenv(ApiSettings.env_name("small_job_max_bytes"), "5000")
    reset_caches()

    status, resp = call("POST", "/jobs", body(options={"task": "translate"}))
    assert (status, resp["error"]["code"]) == (400, "unsupported_task")
    assert resp["error"]["details"] == {"field": "options.task", "model": "tiny.en", "supported": ["transcribe"]}
    assert "English-only" in resp["error"]["message"]
    assert call("POST", "/jobs", body(options={"task": "transcribe"}))[0] == 201
    assert call("POST", "/jobs", body(options={"task": "translate", "model": "large-v3"}))[0] == 201


def test_the_small_job_pools_model_counts_too(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ApiSettings.env_name("default_model"), "large-v3")
    monkeypatch.setenv(ApiSettings.env_name("small_job_model"), "small.en")
    reset_caches()
    status, resp = call("POST", "/jobs", body(options={"language": "ja"}))
    assert (status, resp["error"]["details"]["model"]) == (400, "small.en")


# ---- queries, paths and headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "code"),
    [
        ("GET", "/jobs", {"limit": "1e3"}, None, "invalid_request"),
        ("GET", "/jobs", {"limit": "-1"}, None, "invalid_request"),
        ("GET", "/jobs", {"status": "PENDING"}, None, "invalid_request"),
        ("GET", "/jobs", {"next_token": "x" * 3000}, None, "invalid_request"),
        ("GET", "/jobs", {"next_token": "eyJqIjogMX0"}, None, "invalid_next_token"),
        ("GET", "/jobs/" + "a" * 65, None, None, "invalid_request"),
        ("POST", "/jobs", None, {"Idempotency-Key": "k" * 256}, "invalid_idempotency_key"),
        ("POST", "/jobs", None, {"Idempotency-Key": ""}, "invalid_idempotency_key"),
    ],
)
def test_bad_queries_paths_and_headers_are_400(
    method: str, path: str, query: dict[str, str] | None, headers: dict[str, str] | None, code: str
) -> None:
    status, resp = call(method, path, VALID if method == "POST" else None, query=query, headers=headers)
    assert (status, resp["error"]["code"]) == (400, code)


@pytest.mark.parametrize("job_id", ["../jobs", "%2e%2e", "0" * 32 + "/../x", "'; DROP TABLE jobs;--", "🎧"])
def test_odd_job_ids_are_404_never_500(job_id: str) -> None:
    status, resp = call("GET", f"/jobs/{job_id}")
    assert status in (400, 404), resp
    assert resp["error"]["code"] in ("job_not_found", "route_not_found", "invalid_request")


# ---- uploads -------------------------------------------------------------------------------


def never_stuck(stack: Stack, job_id: str) -> JobStatus:
    """The job ended, or something will move it: pending and queued jobs carry a deadline."""
    repo = JobRepository(stack.table)
    job = repo.get(job_id)
    if not job.status.terminal:
        assert job_id in {j.job_id for j in repo.due(job.status, now=float("inf"))}, job.status
    return job.status


def object_exists(stack: Stack, key: str) -> bool:
    return boto3.client("s3").list_objects_v2(Bucket=stack.bucket, Prefix=key).get("KeyCount", 0) > 0


@pytest.mark.parametrize(
    ("declared", "data", "content_type", "status", "code"),
    [
        (100, b"y" * 5000, None, "failed", "upload_too_large"),
        (100, b"", None, "failed", "upload_empty"),
        (10, b"z" * 10, "text/html", "failed", "upload_content_type_mismatch"),
        (10, b"z" * 10, "audio/mpeg", "failed", "upload_content_type_mismatch"),
        (10, b"z" * 5, None, "queued", None),  # smaller than declared: the real size is recorded
    ],
    ids=["larger", "zero-length", "html", "other-audio", "smaller"],
)
def test_bad_uploads_fail_the_job_with_their_code(
    aws_stack: Stack, declared: int, data: bytes, content_type: str | None, status: str, code: str | None
) -> None:
    job = create(size=declared)
    post_upload(job["upload"], data, content_type=content_type)

    assert deliver_uploads(aws_stack) == {"batchItemFailures": []}

    got = call("GET", f"/jobs/{job['job_id']}")[1]
    assert (got["status"], (got["error"] or {}).get("code")) == (status, code)
    assert never_stuck(aws_stack, job["job_id"]) == status


def test_an_upload_after_the_window_finds_the_job_expired_and_is_deleted(aws_stack: Stack) -> None:
    from batchscribe.lifecycle import Lifecycle
    from batchscribe.settings import LifecycleSettings

    job = create(size=5)
    late = Lifecycle.from_settings(LifecycleSettings.from_env(aws_stack.env), clock=lambda: 4e9)
    assert late.sweep().upload_expired == 1
    post_upload(job["upload"], b"12345")  # moto does not enforce the POST policy's expiry

    deliver_uploads(aws_stack)

    got = call("GET", f"/jobs/{job['job_id']}")[1]
    assert (got["status"], got["error"]["code"]) == ("failed", "upload_expired")
    assert not object_exists(aws_stack, job["upload"]["fields"]["key"])
    assert receive_all(aws_stack.jobs_queue_url) == []


def test_an_upload_to_another_owners_key_moves_neither_job(aws_stack: Stack) -> None:
    """Alice's job id under Bob's owner prefix (and the reverse) is a key no ticket names:
    deleted, and both jobs stay as they were (each still swept at its deadline)."""
    alice, bob = create(owner=OWNER_A, size=5), create(owner=OWNER_B, size=5)
    repo = JobRepository(aws_stack.table)
    a, b = repo.get(alice["job_id"]), repo.get(bob["job_id"])
    s3 = boto3.client("s3")
    for okey, job_id in ((b.owner_key, a.job_id), (a.owner_key, b.job_id)):
        s3.put_object(Bucket=aws_stack.bucket, Key=keys.upload_key(okey, job_id), Body=b"12345")

    deliver_uploads(aws_stack)

    for job_id, okey in ((a.job_id, b.owner_key), (b.job_id, a.owner_key)):
        assert never_stuck(aws_stack, job_id) is JobStatus.PENDING
        assert not object_exists(aws_stack, keys.upload_key(okey, job_id))
    assert receive_all(aws_stack.jobs_queue_url) == []


def test_the_checked_object_is_pinned_by_its_etag(aws_stack: Stack) -> None:
    """Intake records what it checked: `input.etag` (and the version, on a versioned bucket);
    the worker downloads with IfMatch on it and fails `input_changed` on a mismatch."""
    job = create(size=5)
    post_upload(job["upload"], b"12345")
    deliver_uploads(aws_stack)

    record = JobRepository(aws_stack.table).get(job["job_id"])
    head = boto3.client("s3").head_object(Bucket=aws_stack.bucket, Key=record.input.key)
    assert record.status is JobStatus.QUEUED
    assert record.input.etag == head["ETag"] and head["ETag"].startswith('"')


def test_a_second_upload_while_queued_fails_the_job_input_changed(aws_stack: Stack) -> None:
    job = create(size=5)
    post_upload(job["upload"], b"12345")
    deliver_uploads(aws_stack)
    assert call("GET", f"/jobs/{job['job_id']}")[1]["status"] == "queued"

    post_upload(job["upload"], b"54321")  # the same presigned POST, other content
    deliver_uploads(aws_stack)

    got = call("GET", f"/jobs/{job['job_id']}")[1]
    assert (got["status"], got["error"]["code"]) == ("failed", "input_changed")


def test_the_same_bytes_uploaded_twice_change_nothing(aws_stack: Stack) -> None:
    """A client retrying its upload (same content, same ETag) is a duplicate, not a change."""
    job = create(size=5)
    post_upload(job["upload"], b"12345")
    deliver_uploads(aws_stack)
    post_upload(job["upload"], b"12345")
    deliver_uploads(aws_stack)

    assert never_stuck(aws_stack, job["job_id"]) is JobStatus.QUEUED
    assert len(receive_all(aws_stack.jobs_queue_url)) == 1
