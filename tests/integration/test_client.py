"""The API client: SigV4 signing with the current credentials, the region, the API URL from
stack outputs, retries (urllib3's Retry, Retry-After), polling backoff, id prefixes, paging."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import botocore.session
import pytest
import responses
from botocore.credentials import RefreshableCredentials
from moto import mock_aws

from batchscribe.models import iso
from batchscribe_cli.client import (
    ApiError,
    Backoff,
    BadApiUrl,
    Client,
    JobRefError,
    SetupError,
    api_url_from_stack,
    is_local,
    region_from_url,
)

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


@responses.activate
def test_each_request_is_signed_with_the_credentials_of_the_moment() -> None:
    """An expiring role session is refreshed by botocore between requests, not frozen at start."""
    issued: list[str] = []

    def refresh() -> dict[str, str]:
        issued.append(f"AKIDREFRESHED{len(issued)}")
        expiry = datetime.now(UTC) + timedelta(minutes=5)  # inside botocore's refresh window
        return {"access_key": issued[-1], "secret_key": "s", "token": "t", "expiry_time": expiry.isoformat()}

    aws = botocore.session.Session()
    aws._credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test-role")
    responses.add(responses.GET, f"{API}/jobs/{'a' * 32}", json={"job_id": "a" * 32, "status": "queued"})
    client = Client(API, aws=aws)

    client.get("a" * 32)
    client.get("a" * 32)

    keys = [re.search(r"Credential=([A-Z0-9]+)/", str(c.request.headers["Authorization"])) for c in responses.calls]
    used = [m.group(1) for m in keys if m]
    assert len(used) == 2 and used[0] != used[1], used  # a fresh key set for each request
    assert set(used) <= set(issued)
    assert all(c.request.headers["X-Amz-Security-Token"] == "t" for c in responses.calls)


def test_the_signing_region_comes_from_the_url_then_the_aws_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert region_from_url(API) == "eu-west-1"
    assert region_from_url("https://x.execute-api.cn-north-1.amazonaws.com.cn/v1") == "cn-north-1"
    assert region_from_url("https://api.example.com/v1") is None

    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    assert Client(API).region == "eu-west-1"  # the API's own region wins: it is what it verifies
    assert Client("https://api.example.com/v1").region == "ap-southeast-2"
    assert Client("https://api.example.com/v1", region="sa-east-1").region == "sa-east-1"

    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.chdir(tmp_path)  # nor a deploy config (cdk.json) here to take the region from
    with pytest.raises(SetupError, match="no AWS region"):
        Client("https://api.example.com/v1")  # never a silent us-east-1
    with pytest.raises(SetupError, match="no AWS region"):
        api_url_from_stack("Batchscribe")


def test_an_api_url_without_a_scheme_is_refused_with_the_fix() -> None:
    with pytest.raises(BadApiUrl) as err:
        Client("abc123.execute-api.eu-west-1.amazonaws.com/v1")
    assert err.value.hint is not None and "https://abc123.execute-api" in err.value.hint
    with pytest.raises(BadApiUrl) as err:
        Client("127.0.0.1:8000")
    assert err.value.hint is not None and "http://127.0.0.1:8000" in err.value.hint


def test_api_url_comes_from_the_stack_outputs() -> None:
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"ApiUrl": {"Value": API}}}
    with mock_aws():
        boto3.client("cloudformation").create_stack(StackName="Batchscribe", TemplateBody=json.dumps(template))
        assert api_url_from_stack("Batchscribe") == API
        with pytest.raises(SetupError, match="no stack 'Nope'"):
            api_url_from_stack("Nope")


def test_the_stack_is_found_in_the_region_the_deploy_config_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployed to eu-west-1 by the checkout's cdk.json while the shell's region is us-east-1:
    `--stack` still finds it, as `cdk destroy` would; an explicit --region is taken as said."""
    template = {"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}, "Outputs": {"ApiUrl": {"Value": API}}}
    (tmp_path / "cdk.json").write_text(json.dumps({"context": {"batchscribe": {"region": "eu-west-1"}}}))
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        cfn = boto3.client("cloudformation", region_name="eu-west-1")
        cfn.create_stack(StackName="Batchscribe", TemplateBody=json.dumps(template))
        assert api_url_from_stack("Batchscribe") == API  # AWS_REGION is us-east-1 in the tests
        with pytest.raises(SetupError, match=r"no stack 'Batchscribe' in us-east-1$"):
            api_url_from_stack("Batchscribe", region="us-east-1")
        with pytest.raises(SetupError, match="no stack 'Nope' in us-east-1 or eu-west-1"):
            api_url_from_stack("Nope")


@responses.activate
def test_job_creation_carries_an_idempotency_key_so_a_retry_makes_no_second_job(tmp_path: Path) -> None:
    audio = tmp_path / "a.mp3"
    audio.write_bytes(b"\0" * 10)
    responses.add(responses.POST, f"{API}/jobs", json={"job_id": "a" * 32}, status=201)
    client = Client(API)
    client.create_job(audio)
    client.create_job(audio)
    keys = [c.request.headers["Idempotency-Key"] for c in responses.calls]
    assert len(set(keys)) == 2 and all(keys)
    signed = str(responses.calls[0].request.headers["Authorization"])
    assert "idempotency-key" in signed.split("SignedHeaders=")[1]


# ---- retries: a real HTTP server, since urllib3 does the retrying --------------------------


class Scripted(BaseHTTPRequestHandler):
    """Answers from a script: (status, headers) per request, then 200 with a job list."""

    script: list[tuple[int, dict[str, str]]] = []
    seen: list[float] = []

    def do_GET(self) -> None:
        Scripted.seen.append(time.monotonic())
        status, headers = Scripted.script.pop(0) if Scripted.script else (200, {})
        body = json.dumps({"jobs": [], "next_token": None} if status == 200 else {"message": "busy"}).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def scripted() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Scripted.script, Scripted.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_5xx_and_429_are_retried_honouring_retry_after(scripted: str) -> None:
    Scripted.script = [(503, {}), (502, {}), (429, {"Retry-After": "1"})]

    assert Client(scripted).list()["jobs"] == []

    assert len(Scripted.seen) == 4  # three refusals, then the answer
    assert Scripted.seen[3] - Scripted.seen[2] >= 0.95  # waited as Retry-After said


def test_retries_give_up_with_the_last_answer(scripted: str) -> None:
    Scripted.script = [(500, {})] * 10

    with pytest.raises(ApiError) as err:
        Client(scripted, retry=Client.retry_policy(attempts=2)).list()

    assert err.value.status == 500 and err.value.message == "busy"
    assert len(Scripted.seen) == 3  # the first try and two retries


def test_connection_errors_are_retried_before_giving_up() -> None:
    policy = Client.retry_policy()
    assert policy.connect and policy.connect >= 2 and policy.backoff_max <= 10
    assert 503 in (policy.status_forcelist or ()) and policy.respect_retry_after_header


# ---- polling ---------------------------------------------------------------------------------


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    b = Backoff(0.5, 5.0, random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    nominal = [0.5, 1, 2, 4, 5, 5, 5, 5]
    assert all(n / 2 <= d <= n for d, n in zip(delays, nominal, strict=True)), delays
    assert len({round(d, 6) for d in delays[4:]}) == 4  # jittered, not in step
    b.reset()
    assert b.next_delay() <= 0.5


def test_wait_polls_fast_while_the_job_moves_and_backs_off_while_it_does_not() -> None:
    states = [("queued", 0)] * 5 + [("running", 10), ("running", 40), ("running", 40), ("succeeded", 100)]
    sleeps: list[float] = []
    client = Client("http://127.0.0.1:1", sleep=sleeps.append, rng=random.Random(1))
    answers = iter(states)

    def get(job_id: str) -> dict[str, Any]:
        status, progress = next(answers)
        return {"job_id": job_id, "status": status, "progress": progress}

    client.get = get  # type: ignore[method-assign]
    seen: list[str] = []

    done = client.wait("j", lambda job: seen.append(job["status"]))

    assert done["status"] == "succeeded" and len(seen) == len(states)
    assert len(sleeps) == len(states) - 1
    assert sleeps[0] <= 0.5 and sleeps[3] > 1.0  # queued, unchanged: backing off (0.5, 1, 2, 4 nominal)
    assert sleeps[5] <= 0.5 and sleeps[6] <= 0.5  # progress moved: polled closely again
    assert max(sleeps) <= 5.0


# ---- job id prefixes and paging ------------------------------------------------------------


def _job(job_id: str, minutes_ago: float) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "succeeded",
        "progress": 100,
        "created_at": iso(time.time() - minutes_ago * 60),
        "input": {"filename": "a.mp3"},
    }


def _serve_pages(jobs: list[dict[str, Any]]) -> list[dict[str, list[str]]]:
    """GET /jobs over `jobs` (newest first) with the API's limit/next_token paging."""
    queries: list[dict[str, list[str]]] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(request.url).query)
        queries.append(query)
        start = int(query.get("next_token", ["0"])[0])
        limit = int(query["limit"][0])
        page = jobs[start : start + limit]
        more = start + limit < len(jobs)
        return 200, {}, json.dumps({"jobs": page, "next_token": str(start + limit) if more else None})

    responses.add_callback(responses.GET, re.compile(r"http://127\.0\.0\.1:1/jobs(\?.*)?$"), callback=answer)
    return queries


@responses.activate
def test_a_unique_prefix_resolves_among_all_pages_and_an_ambiguous_one_is_refused() -> None:
    ids = [f"{i:032x}" for i in range(250)]
    ids[3] = "abcdef01" + "0" * 24
    ids[240] = "abcdef02" + "0" * 24  # on the third page
    ids[100] = "123456ab" + "0" * 24
    _serve_pages([_job(i, n) for n, i in enumerate(ids)])
    client = Client("http://127.0.0.1:1")

    assert client.resolve("123456") == ids[100]
    assert client.resolve("123456AB-0000") == ids[100]  # case and dashes do not matter
    assert client.resolve("abcdef01") == ids[3]
    full = "f" * 32
    assert client.resolve(full) == full  # a full id is not looked up
    with pytest.raises(JobRefError) as err:
        client.resolve("abcdef")
    assert err.value.kind == JobRefError.AMBIGUOUS and "abcdef01" in err.value.message
    with pytest.raises(JobRefError) as err:
        client.resolve("fedcba")
    assert err.value.kind == JobRefError.NONE
    for bad in ("abc", "xyz123", ""):
        with pytest.raises(JobRefError) as err:
            client.resolve(bad)
        assert err.value.kind == JobRefError.MALFORMED


@responses.activate
def test_a_prefix_is_not_trusted_when_not_all_jobs_could_be_checked() -> None:
    ids = [f"{i:032x}" for i in range(300)]
    ids[0] = "abcdef01" + "0" * 24
    _serve_pages([_job(i, n) for n, i in enumerate(ids)])
    with pytest.raises(JobRefError) as err:
        Client("http://127.0.0.1:1").resolve("abcdef", max_pages=2)
    assert err.value.kind == JobRefError.UNCHECKED


@responses.activate
def test_list_jobs_filters_by_priority() -> None:
    queries = _serve_pages([_job(f"{i:032x}", minutes_ago=i) for i in range(3)])
    assert len(Client("http://127.0.0.1:1").list_jobs(priority="high")["jobs"]) == 3
    assert queries[0]["priority"] == ["high"]


@responses.activate
def test_list_jobs_pages_to_the_limit_stops_at_since_and_returns_the_cursor() -> None:
    jobs = [_job(f"{i:032x}", minutes_ago=10 * i) for i in range(150)]  # one every 10 minutes
    queries = _serve_pages(jobs)
    client = Client("http://127.0.0.1:1")

    first = client.list_jobs(limit=120)
    assert [j["job_id"] for j in first["jobs"]] == [j["job_id"] for j in jobs[:120]]
    assert first["next_token"] == "120" and [q["limit"] for q in queries] == [["100"], ["20"]]
    rest = client.list_jobs(limit=120, next_token=first["next_token"])
    assert len(rest["jobs"]) == 30 and rest["next_token"] is None

    queries.clear()
    recent = client.list_jobs(limit=500, since=datetime.now(UTC) - timedelta(minutes=95))
    assert len(recent["jobs"]) == 10 and recent["next_token"] is None  # 0, 10, ... 90 minutes ago
    assert len(queries) == 1  # stopped at the first older job: no further pages read
