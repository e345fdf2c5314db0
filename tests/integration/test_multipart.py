"""Large uploads in parts: start, PUT each part to its presigned URL, complete; asked again
after an interruption, the API says which parts S3 holds so only the rest is sent. Only the
owner of a pending job may upload to it; bad part lists get a stable code."""

from __future__ import annotations

import os

import pytest
import requests

from batchscribe.models import JobStatus
from batchscribe.repository import JobRepository
from batchscribe.settings import ApiSettings
from tests.conftest import OWNER_B, Stack, reset_caches
from tests.helpers import call, create, deliver_uploads

MIB = 1024 * 1024


@pytest.fixture
def small_parts(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv(ApiSettings.env_name("multipart_part_bytes"), str(5 * MIB))  # S3's smallest part
    reset_caches()
    return 5 * MIB


def put_part(url: str, data: bytes) -> str:
    resp = requests.put(url, data=data, timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.headers["ETag"])


def send(part: dict[str, object], data: bytes, part_size: int) -> str:
    n = int(str(part["part_number"]))
    return put_part(str(part["url"]), data[(n - 1) * part_size : n * part_size])


def test_a_file_in_parts_arrives_whole_and_queues_the_job(aws_stack: Stack, small_parts: int) -> None:
    data = os.urandom(11 * MIB + 123)
    job = create(size=len(data))
    status, ticket = call("POST", f"/jobs/{job['job_id']}/multipart")
    assert status == 200
    assert (ticket["part_size"], ticket["part_count"], ticket["uploaded"]) == (small_parts, 3, [])
    assert [p["part_number"] for p in ticket["parts"]] == [1, 2, 3]
    etags = [{"part_number": p["part_number"], "etag": send(p, data, small_parts)} for p in ticket["parts"]]
    status, done = call("POST", f"/jobs/{job['job_id']}/multipart/complete", {"parts": etags})
    assert status == 200 and done["status"] == "pending"  # the object's arrival moves it on
    deliver_uploads(aws_stack)
    record = JobRepository(aws_stack.table).get(job["job_id"])
    assert record.status is JobStatus.QUEUED and record.input.size == len(data)
    assert record.input.multipart_upload_id is None


def test_asked_again_it_resumes_and_sends_only_the_missing_parts(aws_stack: Stack, small_parts: int) -> None:
    data = os.urandom(12 * MIB)
    job = create(size=len(data))
    first = call("POST", f"/jobs/{job['job_id']}/multipart")[1]
    part1 = put_part(first["parts"][0]["url"], data[:small_parts])
    # ... the client is interrupted here, and asks again
    again = call("POST", f"/jobs/{job['job_id']}/multipart")[1]
    assert again["upload_id"] == first["upload_id"]
    assert again["uploaded"] == [{"part_number": 1, "etag": part1, "size": small_parts}]
    assert [p["part_number"] for p in again["parts"]] == [2, 3]
    rest = [{"part_number": p["part_number"], "etag": send(p, data, small_parts)} for p in again["parts"]]
    parts = [{"part_number": 1, "etag": part1}, *rest]
    assert call("POST", f"/jobs/{job['job_id']}/multipart/complete", {"parts": parts})[0] == 200
    deliver_uploads(aws_stack)
    assert JobRepository(aws_stack.table).get(job["job_id"]).input.size == len(data)


def test_someone_elses_job_is_404_and_a_queued_one_409(aws_stack: Stack, small_parts: int) -> None:
    job = create(size=6 * MIB)
    assert call("POST", f"/jobs/{job['job_id']}/multipart", owner=OWNER_B)[0] == 404
    assert call("POST", f"/jobs/{job['job_id']}/multipart/abort", owner=OWNER_B)[0] == 404
    repo = JobRepository(aws_stack.table)
    repo.enqueue(job["job_id"], 6 * MIB)
    status, resp = call("POST", f"/jobs/{job['job_id']}/multipart")
    assert (status, resp["error"]["code"]) == (409, "job_not_pending")


@pytest.mark.parametrize(
    ("parts", "status", "code"),
    [
        ([{"part_number": 2, "etag": '"x"'}, {"part_number": 1, "etag": '"y"'}], 400, "invalid_parts"),
        ([{"part_number": 1, "etag": '"not-the-etag"'}], 400, "invalid_parts"),
        ([], 400, "invalid_request"),
        ([{"part_number": "1", "etag": '"x"'}], 400, "invalid_request"),
    ],
)
def test_bad_part_lists_get_their_code(
    aws_stack: Stack, small_parts: int, parts: list[dict[str, object]], status: int, code: str
) -> None:
    job = create(size=6 * MIB)
    call("POST", f"/jobs/{job['job_id']}/multipart")
    got_status, resp = call("POST", f"/jobs/{job['job_id']}/multipart/complete", {"parts": parts})
    assert (got_status, resp["error"]["code"]) == (status, code)


def test_complete_without_a_start_and_abort(aws_stack: Stack, small_parts: int) -> None:
    job = create(size=6 * MIB)
    status, resp = call(
        "POST", f"/jobs/{job['job_id']}/multipart/complete", {"parts": [{"part_number": 1, "etag": "e"}]}
    )
    assert (status, resp["error"]["code"]) == (409, "no_multipart_upload")
    first = call("POST", f"/jobs/{job['job_id']}/multipart")[1]
    assert call("POST", f"/jobs/{job['job_id']}/multipart/abort")[0] == 200
    assert JobRepository(aws_stack.table).get(job["job_id"]).input.multipart_upload_id is None
    again = call("POST", f"/jobs/{job['job_id']}/multipart")[1]
    assert again["upload_id"] != first["upload_id"] and again["uploaded"] == []
