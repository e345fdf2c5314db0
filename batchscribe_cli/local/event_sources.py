"""What invokes the Lambdas when deployed, emulated by polling: SQS event sources (a queue ->
a handler with batch events), the DynamoDB stream event source (the jobs table's stream -> a
handler with stream events), and schedules. Each runs on its own thread until the stack stops,
and survives the errors Lambda's own pollers survive."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from batchscribe import aws
from batchscribe.resources import NOTIFY_BATCH_SIZE, NOTIFY_RETRY_ATTEMPTS
from batchscribe_cli.local.handlers import Handler
from batchscribe_cli.local.lambda_events import LocalContext, scheduled_event, sqs_event, stream_event

Say = Callable[[str], None]


class Loops:
    """The stack's background threads: named, stopped together by one event, and an error in
    one is a line on the terminal, never the end of the stack."""

    def __init__(self, stopping: threading.Event, say: Say) -> None:
        self.stopping = stopping
        self.say = say
        self.threads: list[threading.Thread] = []

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except Exception as exc:
                if not self.stopping.is_set():
                    self.say(f"{name} stopped on an error: {type(exc).__name__}: {exc}")

        t = threading.Thread(target=run, name=f"local-{name}", daemon=True)
        t.start()
        self.threads.append(t)

    def every(self, name: str, seconds: float, action: Callable[[], None]) -> None:
        """A schedule: `action` every `seconds` until the stack stops; an error is logged."""

        def loop() -> None:
            while not self.stopping.wait(seconds):
                try:
                    action()
                except Exception as exc:
                    if not self.stopping.is_set():
                        self.say(f"{name}: {type(exc).__name__}: {exc}")

        self.start(name, loop)

    def join(self, timeout: float = 5) -> None:
        for t in self.threads:
            t.join(timeout=timeout)


def scheduled(name: str, handler: Handler, say: Say) -> Callable[[], None]:
    """A handler invoked as an EventBridge schedule's target; what it counted, if anything, said."""

    def invoke() -> None:
        counts = handler(scheduled_event(name), LocalContext())
        if any(counts.values()):
            say(f"{name}: {counts}")

    return invoke


class SqsEventSource:
    """Lambda's SQS event source: receive, invoke with a batch event, delete what succeeded
    (all but the reported batchItemFailures). It keeps polling through SQS errors and through
    handlers that raise, as Lambda's does."""

    def __init__(self, queue_url: str, handler: Handler, *, stopping: threading.Event, say: Say) -> None:
        self.queue_url = queue_url
        self.handler = handler
        self.stopping = stopping
        self.say = say
        self.name = queue_url.rsplit("/", 1)[-1]

    def run(self) -> None:
        sqs = aws.client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        while not self.stopping.is_set():
            messages = self._receive(sqs)
            if not messages:
                continue
            try:
                result = self.handler(sqs_event(messages, arn), LocalContext())
            except Exception as exc:
                # What Lambda's event source does with an invocation that raised (Powertools
                # raises when every record of a batch failed): nothing is deleted, the batch
                # comes back after its visibility timeout; the poller goes on.
                self.say(f"{self.name}: the handler raised {type(exc).__name__}; batch retried")
                continue
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            self._delete(sqs, [m for m in messages if m["MessageId"] not in failed])

    def _receive(self, sqs: Any) -> list[dict[str, Any]]:
        try:
            resp = sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        except Exception as exc:
            # Lambda's event source keeps polling through SQS errors; so does this one
            if not self.stopping.is_set():
                self.say(f"{self.name}: could not receive ({type(exc).__name__}); polling again")
                self.stopping.wait(1)
            return []
        return list(resp.get("Messages", []))

    def _delete(self, sqs: Any, handled: list[dict[str, Any]]) -> None:
        for m in handled:
            try:
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
            except Exception as exc:  # handled, not deleted: it comes back, and handlers are idempotent
                if not self.stopping.is_set():
                    self.say(f"{self.name}: could not delete a handled message ({type(exc).__name__})")


class StreamEventSource:
    """Lambda's DynamoDB stream event source, configured as the notify construct configures it:
    from the LATEST position (opened at start, so a restored table is not news), up to
    `batch_size` records per invocation, a failed batch bisected and each part retried up to
    `retry_attempts` times, then left behind (deployed: its details go to the Failures queue)
    so the stream goes on. `observers` see every record read (the stack's transition lines);
    `after_read` gets each next iterator (moto's memory: what was read can be dropped)."""

    def __init__(
        self,
        table_name: str,
        handler: Handler,
        *,
        stopping: threading.Event,
        say: Say,
        observers: Iterable[Callable[[list[dict[str, Any]]], None]] = (),
        after_read: Callable[[str], object] | None = None,
        batch_size: int = NOTIFY_BATCH_SIZE,
        retry_attempts: int = NOTIFY_RETRY_ATTEMPTS,
        idle_seconds: float = 0.25,
    ) -> None:
        self.table_name = table_name
        self.handler = handler
        self.stopping = stopping
        self.say = say
        self.observers = list(observers)
        self.after_read = after_read
        self.batch_size = batch_size
        self.retry_attempts = retry_attempts
        self.idle_seconds = idle_seconds
        self.stream_arn = ""
        self.iterator = ""
        self._streams: Any = None

    def open(self) -> None:
        """Take the LATEST position: records written from now on are delivered."""
        self.stream_arn = aws.client("dynamodb").describe_table(TableName=self.table_name)["Table"]["LatestStreamArn"]
        self._streams = streams = aws.client("dynamodbstreams")
        [shard] = streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        self.iterator = streams.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
        )["ShardIterator"]

    def run(self) -> None:
        if not self.iterator:
            self.open()
        while not self.stopping.is_set():
            if not self.poll():
                self.stopping.wait(self.idle_seconds)

    def poll(self) -> int:
        """Read once and deliver what was read; the number of records."""
        try:
            resp = self._streams.get_records(ShardIterator=self.iterator, Limit=self.batch_size)
        except Exception as exc:  # the same position is read again
            if not self.stopping.is_set():
                self.say(f"{self.table_name} stream: could not read ({type(exc).__name__}); polling again")
                self.stopping.wait(1)
            return 0
        self.iterator = resp["NextShardIterator"]
        if self.after_read is not None:
            self.after_read(self.iterator)
        records: list[dict[str, Any]] = resp.get("Records", [])
        if records:
            for observe in self.observers:
                observe(records)
            self._deliver(records)
        return len(records)

    def _deliver(self, records: list[dict[str, Any]]) -> None:
        pending = [(records, self.retry_attempts)]
        while pending and not self.stopping.is_set():
            batch, retries = pending.pop(0)
            try:
                self.handler(stream_event(batch, self.stream_arn), LocalContext())
                continue
            except Exception as exc:
                error = type(exc).__name__
                if batch is records:
                    self.say(f"{self.table_name} stream: the handler raised {error}; bisected and retried")
            if len(batch) > 1:  # bisect_batch_on_error: each half on its own
                half = len(batch) // 2
                pending[:0] = [(batch[:half], retries), (batch[half:], retries)]
            elif retries > 0:
                self.stopping.wait(1)
                pending.insert(0, (batch, retries - 1))
            else:
                seq, times = batch[0]["dynamodb"]["SequenceNumber"], self.retry_attempts + 1
                self.say(f"{self.table_name} stream: record {seq} failed ({error}) {times} times; left")
