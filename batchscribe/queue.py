"""SQS adapter for the jobs queues, and the dispatcher that picks a job's queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from batchscribe import aws
from batchscribe.models import JobMessage, MessageReason
from batchscribe.settings import RoutingSettings


@dataclass(frozen=True)
class Received:
    message: JobMessage | None  # None: a body that is not a job message (poison)
    receipt_handle: str
    receive_count: int
    message_id: str
    raw_body: str


class JobQueue:
    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def _sqs(self) -> Any:
        return aws.client("sqs")

    def send(self, message: JobMessage) -> None:
        self._sqs.send_message(QueueUrl=self.url, MessageBody=message.model_dump_json())

    def receive(self, wait_seconds: int = 20, max_messages: int = 1) -> list[Received]:
        resp = self._sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        out = []
        for msg in resp.get("Messages", []):
            try:
                parsed: JobMessage | None = JobMessage.model_validate_json(msg["Body"])
            except ValueError:
                parsed = None
            out.append(
                Received(
                    message=parsed,
                    receipt_handle=msg["ReceiptHandle"],
                    receive_count=int(msg.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                    message_id=msg["MessageId"],
                    raw_body=msg["Body"],
                )
            )
        return out

    def delete(self, receipt_handle: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)
        except ClientError as exc:
            # A handle gone stale (the message came back to someone else) is not our failure.
            if exc.response["Error"]["Code"] not in ("ReceiptHandleIsInvalid", "InvalidParameterValue"):
                raise

    def extend(self, receipt_handle: str, seconds: int) -> None:
        self._sqs.change_message_visibility(QueueUrl=self.url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds)

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages, approximately."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


class JobDispatcher:
    """Sends a job's message to the queue of the pool that runs it: small uploads to the
    CPU pool's queue when the deployment has one, everything else to the GPU pool's."""

    def __init__(self, routing: RoutingSettings) -> None:
        self.routing = routing
        self.default = JobQueue(routing.jobs_queue_url)
        self.small = JobQueue(routing.small_jobs_queue_url) if routing.small_jobs_queue_url else None

    def queue_for(self, size: int, model: str | None = None) -> JobQueue:
        """The CPU pool's queue for a small upload that does not ask for a model only the GPU
        pool serves; the GPU pool's otherwise."""
        if self.small is not None and self.routing.small_pool_takes(size, model):
            return self.small
        return self.default

    def send(self, job_id: str, size: int, reason: MessageReason, model: str | None = None) -> None:
        self.queue_for(size, model).send(JobMessage(job_id=job_id, reason=reason))
