"""Who may see what: the caller's identity, owner isolation on every route, the presigned
POST's policy, and the headers of presigned result links (moto, decorator mode)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from batchscribe.identity import owner_of
from batchscribe.repository import JobRepository
from batchscribe.settings import ApiSettings
from batchscribe.storage import content_disposition
from harness.jobs import put_outputs, succeed_job
from tests.conftest import OWNER_A, OWNER_B, Stack
from tests.helpers import call, create

pytestmark = pytest.mark.usefixtures("aws_stack")

ROLE = "arn:aws:sts::111111111111:assumed-role/transcribers"
ROUTES = [("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/jobs/" + "0" * 32), ("POST", "/jobs/" + "0" * 32 + "/cancel")]


# ---- identity ------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("owner", [None, "", "local", "alice", "arn:aws:iam::12:user/short-account"])
def test_no_iam_identity_is_401_on_every_route_and_never_an_owner(method: str, path: str, owner: str | None) -> None:
    """The handler never invents an owner: no principal (or not an IAM principal ARN) is 401,
    before validation, so an invalid body does not tell an anonymous caller anything either."""
    status, resp = call(method, path, {"filename": "a.wav"} if method == "POST" else None, owner=owner)
    assert (status, resp["error"]["code"]) == (401, "missing_identity")


def test_an_unauthenticated_request_creates_nothing(aws_stack: Stack) -> None:
    call("POST", "/jobs", {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 5}, owner=None)
    assert boto3.client("dynamodb").scan(TableName=aws_stack.table)["Count"] == 0


@pytest.mark.parametrize(
    ("arn", "owner"),
    [
        ("arn:aws:iam::111111111111:user/alice", "arn:aws:iam::111111111111:user/alice"),
        ("arn:aws:iam::111111111111:user/team/alice", "arn:aws:iam::111111111111:user/team/alice"),
        ("arn:aws:iam::111111111111:root", "arn:aws:iam::111111111111:root"),
        (f"{ROLE}/alice", ROLE),
        (f"{ROLE}/i-0123456789abcdef0", ROLE),
        (f"{ROLE}/alice@example.com", ROLE),
        ("arn:aws:sts::111111111111:federated-user/bob", "arn:aws:sts::111111111111:federated-user/bob"),
        ("arn:aws-cn:sts::111111111111:assumed-role/r/s", "arn:aws-cn:sts::111111111111:assumed-role/r"),
    ],
)
def test_the_owner_is_derived_from_what_the_caller_cannot_choose(arn: str, owner: str) -> None:
    assert owner_of(arn) == owner


def test_sessions_of_one_role_share_its_jobs_and_other_roles_see_none() -> None:
    """The session name is the caller's choice, so it is no boundary: isolation is per IAM
    principal (role or user). A session naming itself after another cannot reach further."""
    job = create(owner=f"{ROLE}/alice")
    assert call("GET", f"/jobs/{job['job_id']}", owner=f"{ROLE}/mallory")[0] == 200
    other_role = "arn:aws:sts::111111111111:assumed-role/other/alice"
    assert call("GET", f"/jobs/{job['job_id']}", owner=other_role)[0] == 404
    assert call("GET", f"/jobs/{job['job_id']}", owner="arn:aws:iam::111111111111:user/alice")[0] == 404
    assert call("GET", "/jobs", owner=other_role)[1]["jobs"] == []


# ---- owner isolation -----------------------------------------------------------------------


def finished_job(stack: Stack, owner: str = OWNER_A) -> dict[str, Any]:
    """A succeeded job with outputs and a log, as a worker leaves it."""
    job = create(owner=owner, filename="meeting notes.wav")
    repo = JobRepository(stack.table)
    record = repo.get(job["job_id"])
    transcripts = dict.fromkeys(("json", "txt"), b"secret words")
    outputs, log_key = put_outputs(boto3.client("s3"), stack.bucket, record, transcripts, b"log")
    succeed_job(repo, record.job_id, outputs, log_key)
    return job


def test_another_owner_gets_404_everywhere_and_never_a_url(aws_stack: Stack) -> None:
    job = finished_job(aws_stack)
    job_id = job["job_id"]
    status, mine = call("GET", f"/jobs/{job_id}", owner=OWNER_A)
    assert status == 200 and mine["result"]["urls"] and mine["log_url"]  # the owner gets its links

    answers = [
        call("GET", f"/jobs/{job_id}", owner=OWNER_B),
        call("POST", f"/jobs/{job_id}/cancel", owner=OWNER_B),
    ]
    missing = call("GET", f"/jobs/{'0' * 32}", owner=OWNER_B)
    for status, resp in answers:
        assert status == 404 and resp["error"]["code"] == "job_not_found"
        assert resp["error"]["message"].replace(job_id, "0" * 32) == missing[1]["error"]["message"]
    for query in ({}, {"status": "succeeded"}, {"limit": "100"}):
        status, listing = call("GET", "/jobs", owner=OWNER_B, query=query)
        assert status == 200 and listing["jobs"] == []
        answers.append((status, listing))
    text = json.dumps(answers)
    assert "X-Amz-Signature" not in text and "http" not in text and "secret" not in text
    # and the owner's job is untouched by the attempts
    assert call("GET", f"/jobs/{job_id}", owner=OWNER_A)[1]["status"] == "succeeded"


def test_the_listing_carries_no_urls_at_all() -> None:
    """Lists are for finding jobs; links are made only for one job its owner asked for."""
    create()
    _, listing = call("GET", "/jobs")
    assert "X-Amz-Signature" not in json.dumps(listing)


# ---- the presigned POST --------------------------------------------------------------------


def test_the_presigned_post_policy_pins_key_type_size_and_expiry(aws_stack: Stack) -> None:
    before = time.time()
    job = create(size=12345, content_type="audio/mpeg")
    ticket = job["upload"]
    policy = json.loads(base64.b64decode(ticket["fields"]["policy"]))
    conditions = policy["conditions"]
    key = ticket["fields"]["key"]

    assert {"key": key} in conditions  # exactly this key: no starts-with on the key
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    assert {"bucket": aws_stack.bucket} in conditions
    assert {"Content-Type": "audio/mpeg"} in conditions
    [length] = [c for c in conditions if isinstance(c, list) and c[0] == "content-length-range"]
    assert length == ["content-length-range", 1, 12345]
    window = ApiSettings.from_env(aws_stack.env).upload_window_seconds
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert before < expires <= before + window + 2
    assert datetime.fromisoformat(ticket["expires_at"].replace("Z", "+00:00")).timestamp() <= before + window + 2
    # the signature covers the policy with the server's credentials (a client cannot widen it)
    assert {"x-amz-algorithm", "x-amz-credential", "x-amz-signature", "policy"} <= {k.lower() for k in ticket["fields"]}


def test_a_ticket_is_only_given_while_the_job_waits_for_its_upload(aws_stack: Stack) -> None:
    job = create()
    call("POST", f"/jobs/{job['job_id']}/cancel")
    assert "upload" not in call("GET", f"/jobs/{job['job_id']}")[1]


# ---- presigned GETs: Content-Disposition ---------------------------------------------------


@pytest.mark.parametrize(
    "filename",
    [
        'a"; filename="evil.exe',
        "x\".txt; attachment; filename*=UTF-8''evil.exe",
        "réunion été.srt",
        "会议.txt",
        "back\\slash.txt",
        "semi;colon,comma.txt",
        "percent%22.txt",
        "\r\ninjected: 1.txt",
    ],
)
def test_content_disposition_is_one_safe_ascii_header(filename: str) -> None:
    """RFC 6266: a quoted ASCII fallback with no quote, backslash or separator of its own,
    and the exact name in filename* (RFC 5987, UTF-8, percent-encoded)."""
    from urllib.parse import unquote

    value = content_disposition(filename)
    assert value.isascii() and "\r" not in value and "\n" not in value
    head, fallback, star = value.split("; ")
    assert head == "attachment"
    assert fallback.startswith('filename="') and fallback.endswith('"')
    assert not set(fallback[len('filename="') : -1]) & set('"\\;,%')
    assert star.startswith("filename*=UTF-8''")
    assert unquote(star[len("filename*=UTF-8''") :], encoding="utf-8") == filename
    assert value.count("filename=") == 1 and value.count("filename*=") == 1


def test_result_links_carry_the_encoded_disposition(aws_stack: Stack) -> None:
    job = create(owner=OWNER_A, filename='q"uote; x=1 été.wav')
    repo = JobRepository(aws_stack.table)
    record = repo.get(job["job_id"])
    outputs, _ = put_outputs(boto3.client("s3"), aws_stack.bucket, record, {"txt": b"words"})
    succeed_job(repo, record.job_id, outputs)

    url = call("GET", f"/jobs/{job['job_id']}")[1]["result"]["urls"]["txt"]

    [disposition] = parse_qs(urlsplit(url).query)["response-content-disposition"]
    assert disposition == content_disposition('q"uote; x=1 été.txt')
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200 and resp.content == b"words"
    assert resp.headers["Content-Disposition"] == disposition
