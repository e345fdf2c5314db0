"""What the web console needs from the API (moto, decorator mode): the owner reads back the file
they uploaded (the audio player), nobody else does; and each person signed in through Cognito's
identity pool, though all share one IAM role, is an owner of their own."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from batchscribe.errors import Unauthenticated
from batchscribe.identity import owner_of
from batchscribe_cli.local import LocalContext
from tests.conftest import OWNER_A, OWNER_B, api_event
from tests.helpers import api_handler, call, create, post_upload

pytestmark = pytest.mark.usefixtures("aws_stack")

CONSOLE_ROLE = "arn:aws:sts::111111111111:assumed-role/console-users"
ANN = "us-east-1:0b6a3c3e-1111-4a5b-9c8d-000000000001"
BEN = "us-east-1:0b6a3c3e-2222-4a5b-9c8d-000000000002"


def test_the_owner_reads_back_their_upload_and_nobody_else_can() -> None:
    audio = b"RIFF....WAVEfmt fake audio bytes"
    job = create(size=len(audio))
    assert post_upload(job["upload"], audio).status_code in (200, 201, 204)

    status, answer = call("GET", f"/jobs/{job['job_id']}/input")
    assert status == 200 and answer["content_type"] == "audio/wav"
    assert requests.get(answer["url"], timeout=10).content == audio

    status, other = call("GET", f"/jobs/{job['job_id']}/input", owner=OWNER_B)
    assert (status, other["error"]["code"]) == (404, "job_not_found")
    assert "X-Amz-Signature" not in json.dumps(other)


def test_a_job_whose_file_is_not_uploaded_has_no_input_url() -> None:
    job = create()
    status, answer = call("GET", f"/jobs/{job['job_id']}/input", owner=OWNER_A)
    assert (status, answer["error"]["code"]) == (404, "input_not_found")


def signed_in(method: str, path: str, identity_id: str, body: Any = None) -> tuple[int, Any]:
    """A request signed with credentials Cognito's identity pool vended: API Gateway puts the
    session's role in userArn and the Cognito identity beside it."""
    event = api_event(method, path, body, owner=f"{CONSOLE_ROLE}/CognitoIdentityCredentials")
    event["requestContext"]["identity"]["cognitoIdentityId"] = identity_id
    resp = api_handler()(event, LocalContext())
    return resp["statusCode"], json.loads(resp["body"])


def test_people_signed_in_through_cognito_share_a_role_yet_not_their_jobs() -> None:
    body = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10}
    status, job = signed_in("POST", "/jobs", ANN, body)
    assert status == 201
    assert signed_in("GET", f"/jobs/{job['job_id']}", ANN)[0] == 200
    assert signed_in("GET", f"/jobs/{job['job_id']}", BEN)[0] == 404
    assert signed_in("GET", "/jobs", BEN)[1]["jobs"] == []
    # the role's own sessions without a Cognito identity are another owner too
    assert call("GET", f"/jobs/{job['job_id']}", owner=f"{CONSOLE_ROLE}/CognitoIdentityCredentials")[0] == 404


def test_the_cognito_owner_is_the_role_and_the_identity() -> None:
    assert owner_of(f"{CONSOLE_ROLE}/CognitoIdentityCredentials", ANN) == f"{CONSOLE_ROLE}/cognito:{ANN}"
    assert owner_of("arn:aws:iam::111111111111:user/alice", ANN) == "arn:aws:iam::111111111111:user/alice"
    with pytest.raises(Unauthenticated):
        owner_of(f"{CONSOLE_ROLE}/x", "not an identity/../")
