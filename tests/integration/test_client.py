"""The API client against a deployed stack: SigV4 signing, and the API URL from stack outputs."""

from __future__ import annotations

import json

import boto3
import pytest
import responses
from moto import mock_aws

from batchscribe_cli.client import ApiError, Client, api_url_from_stack, is_local

API = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1"


def test_loopback_is_local_and_a_deployed_url_is_not() -> None:
    assert is_local("http://127.0.0.1:8000") and is_local("http://localhost:1")
    assert not is_local(API)


@responses.activate
def test_deployed_api_requests_are_sigv4_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    responses.add(
        responses.GET, f"{API}/jobs/abc", json={"error": {"code": "job_not_found", "message": "nope"}}, status=404
    )
    responses.add(responses.POST, f"{API}/jobs/def/cancel", json={"job_id": "def", "status": "cancelled"})
    client = Client(API, owner="ignored-when-deployed")

    with pytest.raises(ApiError) as err:
        client.get("abc")
    assert (err.value.status, err.value.code) == (404, "job_not_found")
    assert client.cancel("def")["status"] == "cancelled"

    for call in responses.calls:
        auth = str(call.request.headers["Authorization"])
        assert auth.startswith("AWS4-HMAC-SHA256 Credential=testing/")
        assert "/eu-west-1/execute-api/aws4_request" in auth
        assert "X-Amz-Date" in call.request.headers
        assert "X-Batchscribe-Owner" not in call.request.headers


def test_api_url_comes_from_the_stack_outputs() -> None:
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"ApiUrl": {"Value": API}}}
    with mock_aws():
        boto3.client("cloudformation").create_stack(StackName="Batchscribe", TemplateBody=json.dumps(template))
        assert api_url_from_stack("Batchscribe") == API
