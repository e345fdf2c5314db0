"""Webhooks per job: a finished job with `callback_url` gets one signed POST, verified here by a
real receiver; a 500 is tried again later, a 4xx is not; SSRF targets are refused at create
and again at delivery (a host that resolves to an internal address)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from batchscribe import webhooks
from batchscribe.models import JobMessage, MessageReason, ResultSummary
from batchscribe.outcomes import WEBHOOK_OUTCOMES_METRIC, WEBHOOK_TRIED_EVENT
from batchscribe.queue import JobQueue
from batchscribe.repository import JobRepository
from batchscribe.settings import METRICS_NAMESPACE, ApiSettings, NotifySettings, WebhookSettings
from batchscribe.webhooks import CallbackRefused, SendOutcome, check_url, resolve_public, sign, verify
from batchscribe_cli.local import LocalContext, sqs_event
from tests.conftest import Stack, reset_caches
from tests.helpers import call, create, emf_points
from tests.integration.workers import queue_counts

SECRET = "s3cret-for-tests"

# ---- where a callback may go -------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # not TLS
        "ftp://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://172.16.5.4/hook",
        "https://169.254.169.254/latest/meta-data/",  # the instance metadata service
        "https://100.64.0.1/hook",  # carrier-grade NAT (shared)
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://localhost/hook",
        "https://metadata.google.internal/hook",
        "https://user:pw@example.com/hook",
        "https://example.com/hook#frag",
        "https://" + "a" * 2100 + ".com/",
        "https:///nohost",
        "https://example.com:99999/",
    ],
)
def test_unsafe_callback_urls_are_refused(url: str) -> None:
    with pytest.raises(CallbackRefused):
        check_url(url)


def test_a_public_https_url_is_taken_and_pinned_to_its_checked_address() -> None:
    target = check_url("https://hooks.example.com:8443/in?x=1")
    assert (target.host, target.port, target.path) == ("hooks.example.com", 8443, "/in?x=1")
    assert resolve_public(target, resolver=lambda _h, _p: ["93.184.216.34"]) == "93.184.216.34"


@pytest.mark.parametrize("answers", [["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["169.254.169.254"], []])
def test_a_host_resolving_to_an_internal_address_is_refused_at_delivery(answers: list[str]) -> None:
    """DNS can change between create and delivery (rebinding): the check is made again on the
    addresses the connection will use, and one bad answer among good ones is enough."""
    target = check_url("https://rebind.example.com/hook")
    with pytest.raises(CallbackRefused):
        resolve_public(target, resolver=lambda _h, _p: answers)


def test_the_api_refuses_an_unsafe_callback_with_its_code(aws_stack: Stack) -> None:
    body = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 10}
    status, resp = call("POST", "/jobs", {**body, "callback_url": "https://169.254.169.254/"})
    assert (status, resp["error"]["code"]) == (400, "invalid_callback_url")
    status, resp = call("POST", "/jobs", {**body, "callback_url": 42})
    assert (status, resp["error"]["code"]) == (400, "invalid_request")
    job = create(callback_url="https://hooks.example.com/batchscribe")
    assert job["callback"] == {
        "url": "https://hooks.example.com/batchscribe",
        "state": "pending",
        "attempts": 0,
        "last_status": None,
        "last_error": None,
        "delivered_at": None,
    }


# ---- signatures --------------------------------------------------------------------------


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    body, now = b'{"job_id":"x"}', 1_800_000_000
    header = sign(SECRET.encode(), body, now)
    assert verify(SECRET.encode(), header, body, now=now + 10)
    assert not verify(SECRET.encode(), header, body + b" ", now=now)  # tampered
    assert not verify(b"other", header, body, now=now)  # another secret
    assert not verify(SECRET.encode(), header, body, now=now + 301)  # replayed late
    assert not verify(SECRET.encode(), "garbage", body, now=now)


# ---- delivery, end to end ----------------------------------------------------------------


class Receiver:
    """A webhook receiver on loopback that verifies every call and answers from a script."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append(
                    {
                        "path": self.path,
                        "body": json.loads(data),
                        "event_id": self.headers[webhooks.EVENT_ID_HEADER],
                        "verified": verify(SECRET.encode(), self.headers[webhooks.SIGNATURE_HEADER], data),
                    }
                )
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batchscribe?src=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_callbacks(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The API and the sender configured as the local stack configures them (http:// and
    loopback receivers allowed), the sender's secret in Secrets Manager, and a webhooks queue
    for notify; returns that queue's URL."""
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="webhooks", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    name = f"signing-{uuid.uuid4().hex[:8]}"  # moto lives for the module: one secret per test
    arn = boto3.client("secretsmanager").create_secret(Name=name, SecretString=SECRET)["ARN"]
    monkeypatch.setenv(ApiSettings.env_name("allow_private"), "true")
    monkeypatch.setenv(WebhookSettings.env_name("signing_secret_arn"), arn)
    monkeypatch.setenv(WebhookSettings.env_name("callback_retry_seconds"), "7")
    monkeypatch.setenv(WebhookSettings.env_name("callback_max_attempts"), "3")
    monkeypatch.setenv(NotifySettings.env_name("webhooks_queue_url"), queue_url)
    reset_caches()
    yield str(queue_url)


def finish(aws_stack: Stack, job_id: str, succeed: bool = True) -> None:
    """The job runs and ends, and notify sees the change (the table's stream, by hand)."""
    from lambdas.notify.handler import handler
    from tests.integration.test_events_and_reconcile import _image

    repo = JobRepository(aws_stack.table)
    before = repo.enqueue(job_id, 10)
    claimed = repo.claim(job_id, "w1", 60)
    if succeed:
        summary = ResultSummary(
            language="en",
            duration_seconds=3.0,
            outputs={"txt": "k"},
            engine="e",
            model="m",
            compute_seconds=0.5,
            real_time_factor=0.2,
            cost_usd=0.0001,
        )
        after = repo.succeed(job_id, claimed.attempt, summary, None)
    else:
        after = repo.cancel(job_id)
    record = {"eventName": "MODIFY", "dynamodb": {"OldImage": _image(before), "NewImage": _image(after)}}
    assert handler({"Records": [record]}, LocalContext())["callbacks"] == 1


def run_sender(queue_url: str, handles: list[str] | None = None) -> dict[str, Any]:
    """One invocation of the webhook function on what its queue holds now (the receipt
    handles of what it got go to `handles`)."""
    from lambdas.webhook.handler import handler

    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    assert messages, "nothing on the webhooks queue"
    if handles is not None:
        handles.extend(m["ReceiptHandle"] for m in messages)
    result: dict[str, Any] = handler(sqs_event(messages, arn), LocalContext())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    for m in messages:  # what Lambda's event source does with the ones that succeeded
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return result


def delivered_once(aws_stack: Stack, queue_url: str, answer: int) -> tuple[str, Receiver]:
    """A job with a callback succeeds and the sender tries it once, settling it (the message
    is let go); the receiver answers `answer`."""
    receiver = Receiver([answer])
    try:
        job_id = create(callback_url=receiver.url)["job_id"]
        finish(aws_stack, job_id)
        assert run_sender(queue_url) == {"batchItemFailures": []}
    finally:
        receiver.close()
    return job_id, receiver


def test_a_finished_job_is_posted_signed_and_recorded(aws_stack: Stack, local_callbacks: str) -> None:
    job_id, receiver = delivered_once(aws_stack, local_callbacks, 200)
    [got] = receiver.calls
    assert got["verified"] and got["path"] == "/hooks/batchscribe?src=test"
    assert got["event_id"] == f"{job_id}.succeeded"
    assert got["body"]["job_id"] == job_id and got["body"]["status"] == "succeeded"
    assert got["body"]["result"]["formats"] == ["txt"] and got["body"]["result"]["cost_usd"] == 0.0001
    callback = call("GET", f"/jobs/{job_id}")[1]["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == ("delivered", 1, 200)
    assert callback["delivered_at"]
    assert queue_counts(aws_stack, local_callbacks) == (0, 0)


def test_a_500_is_tried_again_after_a_wait_then_delivered(aws_stack: Stack, local_callbacks: str) -> None:
    receiver = Receiver([500, 200])
    try:
        job_id = create(callback_url=receiver.url)["job_id"]
        finish(aws_stack, job_id, succeed=False)
        handles: list[str] = []
        first = run_sender(local_callbacks, handles)
        assert len(first["batchItemFailures"]) == 1  # the message stays, hidden for the wait
        callback = call("GET", f"/jobs/{job_id}")[1]["callback"]
        assert (callback["state"], callback["attempts"], callback["last_status"]) == ("pending", 1, 500)
        assert queue_counts(aws_stack, local_callbacks) == (0, 1)  # hidden: the wait (callback_retry_seconds) runs
        # the wait is over (rather than sleep through it, end it as SQS would)
        boto3.client("sqs").change_message_visibility(
            QueueUrl=local_callbacks, ReceiptHandle=handles[0], VisibilityTimeout=0
        )
        assert run_sender(local_callbacks) == {"batchItemFailures": []}
    finally:
        receiver.close()
    assert [c["event_id"] for c in receiver.calls] == [f"{job_id}.cancelled"] * 2  # the same id: dedupe on it
    assert all(c["verified"] for c in receiver.calls)
    callback = call("GET", f"/jobs/{job_id}")[1]["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == ("delivered", 2, 200)


def test_a_4xx_is_final_and_the_record_says_why(aws_stack: Stack, local_callbacks: str) -> None:
    job_id, receiver = delivered_once(aws_stack, local_callbacks, 410)
    assert len(receiver.calls) == 1
    callback = call("GET", f"/jobs/{job_id}")[1]["callback"]
    assert (callback["state"], callback["attempts"], callback["last_status"]) == ("failed", 1, 410)
    assert "410" in callback["last_error"]
    assert queue_counts(aws_stack, local_callbacks) == (0, 0)


def test_a_receiver_that_keeps_failing_is_given_up_after_max_attempts(aws_stack: Stack, local_callbacks: str) -> None:
    """Each try waits twice as long as the last; after max_attempts the callback fails and
    the message is let go. Later copies of it (duplicates) find nothing to send."""
    repo = JobRepository(aws_stack.table)
    receiver = Receiver([503] * 5)
    try:
        job_id = create(callback_url=receiver.url)["job_id"]
        repo.enqueue(job_id, 10)
        repo.cancel(job_id)
        settings = WebhookSettings(
            table_name=aws_stack.table,
            bucket_name=aws_stack.bucket,
            callback_max_attempts=3,
            callback_retry_seconds=30,
            allow_private=True,
        )
        sender = webhooks.WebhookSender(settings, repo, SECRET.encode())
        sent = [sender.send(job_id) for _ in range(4)]
    finally:
        receiver.close()
    assert [(s.outcome, s.retry_after) for s in sent] == [
        (SendOutcome.RETRY, 30),
        (SendOutcome.RETRY, 60),
        (SendOutcome.FAILED, None),
        (SendOutcome.NOTHING_TO_SEND, None),
    ]
    assert len(receiver.calls) == 3
    callback = repo.get(job_id).callback
    assert callback is not None and (callback.state, callback.attempts, callback.last_status) == ("failed", 3, 503)


def test_a_job_whose_callback_another_sender_recorded_is_not_counted_twice(aws_stack: Stack) -> None:
    repo = JobRepository(aws_stack.table)
    job = create(callback_url="https://hooks.example.com/x")
    record = repo.get(job["job_id"])
    assert record.callback is not None
    assert repo.record_callback(record.job_id, record.callback.model_copy(update={"attempts": 1}), 0)
    assert not repo.record_callback(record.job_id, record.callback.model_copy(update={"attempts": 1}), 0)


def test_each_delivery_try_is_one_webhook_outcome_metric_and_line(
    aws_stack: Stack, local_callbacks: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A 500, then a 2xx after the wait, then a duplicate copy of the message (SQS is at least
    once): one WebhookOutcomes value per try, its outcome the dimension, and one line the saved
    query counts; the duplicate finds nothing to send and says so; the receiver is called twice."""
    receiver = Receiver([500, 200])
    try:
        job_id = create(callback_url=receiver.url)["job_id"]
        finish(aws_stack, job_id)
        capsys.readouterr()
        caplog.clear()
        handles: list[str] = []
        assert len(run_sender(local_callbacks, handles)["batchItemFailures"]) == 1
        boto3.client("sqs").change_message_visibility(
            QueueUrl=local_callbacks, ReceiptHandle=handles[0], VisibilityTimeout=0
        )
        assert run_sender(local_callbacks) == {"batchItemFailures": []}
        JobQueue(local_callbacks).send(JobMessage(job_id=job_id, reason=MessageReason.CALLBACK))
        assert run_sender(local_callbacks) == {"batchItemFailures": []}
    finally:
        receiver.close()
    points = emf_points(capsys.readouterr().out, WEBHOOK_OUTCOMES_METRIC)
    assert [(p.namespace, p.dimensions, p.value) for p in points] == [
        (METRICS_NAMESPACE, {"service": "webhook", "outcome": outcome}, 1.0)
        for outcome in (SendOutcome.RETRY, SendOutcome.DELIVERED, SendOutcome.NOTHING_TO_SEND)
    ]
    lines = [vars(r) for r in caplog.records if getattr(r, "event", None) == WEBHOOK_TRIED_EVENT]
    assert [(line["job_id"], line["outcome"]) for line in lines] == [(job_id, p.dimensions["outcome"]) for p in points]
    assert len(receiver.calls) == 2
