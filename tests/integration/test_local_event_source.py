"""The local stack's SQS event source behaves as Lambda's: an invocation that raises (Powertools
raises when every record of a batch failed) deletes nothing, the batch comes back after its
visibility timeout, and the poller goes on. (It used to stop on the first such batch, leaving
every later upload pending: found by the chaos run.)"""

from __future__ import annotations

import threading
from typing import Any

import boto3

from batchscribe_cli.local import LocalConfig, LocalStack
from tests.conftest import Stack


def test_a_raising_handler_leaves_the_batch_for_redelivery_and_polling_goes_on(aws_stack: Stack) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="events", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="first")
    lines: list[str] = []
    stack = LocalStack(LocalConfig(), say=lines.append)
    seen: list[tuple[str, int]] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        record = event["Records"][0]
        seen.append((record["body"], int(record["attributes"]["ApproximateReceiveCount"])))
        if len(seen) == 1:
            raise RuntimeError("All records failed processing")
        if record["body"] == "first":
            sqs.send_message(QueueUrl=url, MessageBody="second")
        else:
            stack.stopping.set()
        return {"batchItemFailures": []}

    poller = threading.Thread(target=stack._poll, args=(url, handler), daemon=True)
    poller.start()
    poller.join(timeout=30)

    assert not poller.is_alive()
    assert seen == [("first", 1), ("first", 2), ("second", 1)]  # redelivered, then the next message
    assert any("the handler raised RuntimeError; batch retried" in line for line in lines)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)  # both deleted
