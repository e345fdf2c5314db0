"""The local stack's SQS event source behaves as Lambda's: an invocation that raises (Powertools
raises when every record of a batch failed) deletes nothing, the batch comes back after its
visibility timeout, and the poller goes on. (It used to stop on the first such batch, leaving
every later upload pending: found by the chaos run.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from batchscribe import aws
from batchscribe_cli.local import one_at_a_time
from batchscribe_cli.local.event_sources import SqsEventSource
from tests.conftest import Stack


def run_poller(source: SqsEventSource) -> None:
    """The event source until its handler sets it stopping."""
    poller = threading.Thread(target=source.run, daemon=True)
    poller.start()
    poller.join(timeout=30)
    assert not poller.is_alive()


def event_source(url: str, handler: Callable[[dict[str, Any], Any], Any], lines: list[str]) -> SqsEventSource:
    return SqsEventSource(url, handler, stopping=threading.Event(), say=lines.append)


def test_a_raising_handler_leaves_the_batch_for_redelivery_and_polling_goes_on(aws_stack: Stack) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="events", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="first")
    lines: list[str] = []
    seen: list[tuple[str, int]] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        record = event["Records"][0]
        seen.append((record["body"], int(record["attributes"]["ApproximateReceiveCount"])))
        if len(seen) == 1:
            raise RuntimeError("All records failed processing")
        if record["body"] == "first":
            sqs.send_message(QueueUrl=url, MessageBody="second")
        else:
            source.stopping.set()
        return {"batchItemFailures": []}

    source = event_source(url, handler, lines)
    run_poller(source)
    assert seen == [("first", 1), ("first", 2), ("second", 1)]  # redelivered, then the next message
    assert any("the handler raised RuntimeError; batch retried" in line for line in lines)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # both deleted


def test_sqs_errors_while_polling_or_deleting_do_not_stop_the_event_source(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed receive is polled again and a failed delete leaves the handled message to come
    back (handlers are idempotent): the event source itself never dies (it used to)."""
    real = aws.client("sqs")  # the client the event source gets (one per process)
    url = real.create_queue(QueueName="events", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    real.send_message(QueueUrl=url, MessageBody="only")
    receive, delete = real.receive_message, real.delete_message
    trouble = {"receive": 1, "delete": 1}

    def flaky_receive(**kw: Any) -> Any:
        if trouble["receive"]:
            trouble["receive"] -= 1
            raise ClientError({"Error": {"Code": "InternalError"}}, "ReceiveMessage")
        return receive(**kw)

    def flaky_delete(**kw: Any) -> Any:
        if trouble["delete"]:
            trouble["delete"] -= 1
            raise ClientError({"Error": {"Code": "InternalError"}}, "DeleteMessage")
        return delete(**kw)

    monkeypatch.setattr(real, "receive_message", flaky_receive)
    monkeypatch.setattr(real, "delete_message", flaky_delete)
    lines: list[str] = []
    seen: list[int] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        seen.append(int(event["Records"][0]["attributes"]["ApproximateReceiveCount"]))
        if len(seen) == 2:
            source.stopping.set()
        return {"batchItemFailures": []}

    source = event_source(url, handler, lines)
    run_poller(source)
    assert seen == [1, 2]  # handled, its delete failed, so it came back and was handled again
    assert any("could not receive (ClientError); polling again" in line for line in lines)
    assert any("could not delete a handled message (ClientError)" in line for line in lines)
    assert "Messages" not in receive(QueueUrl=url, WaitTimeSeconds=0)  # deleted the second time


def test_an_in_process_handler_takes_one_event_at_a_time() -> None:
    """The local stack calls each Lambda handler from several threads (HTTP requests, the three
    DLQ pollers); like one Lambda environment it runs one event at a time, because Powertools
    keeps the current event on shared objects (two callers could see each other's identity)."""
    inside, most = [0], [0]
    guard = threading.Lock()

    def handler(event: dict[str, Any], _context: Any) -> str:
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.01)  # the real handlers do I/O here, releasing the GIL
        with guard:
            inside[0] -= 1
        return str(event["owner"])

    serial = one_at_a_time(handler)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: serial({"owner": i}, None), range(40)))
    assert answers == [str(i) for i in range(40)] and most[0] == 1
