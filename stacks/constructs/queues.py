"""A queue with its dead-letter queue: SSE, TLS only, the DLQ kept longer than its source."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe import resources as r


def secure_queue(
    scope: Construct,
    id: str,
    *,
    retention_seconds: int,
    visibility_seconds: int | None = None,
    dead_letter_queue: sqs.DeadLetterQueue | None = None,
) -> sqs.Queue:
    """A queue encrypted at rest (SQS-managed keys) that refuses requests without TLS."""
    return sqs.Queue(
        scope,
        id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        visibility_timeout=Duration.seconds(visibility_seconds) if visibility_seconds is not None else None,
        retention_period=Duration.seconds(retention_seconds),
        dead_letter_queue=dead_letter_queue,
    )


class QueuePair(Construct):
    def __init__(self, scope: Construct, id: str, *, visibility: int, max_receive: int, dlq_visibility: int) -> None:
        super().__init__(scope, id)
        self.dlq = secure_queue(
            self, "Dlq", retention_seconds=r.DLQ_RETENTION_SECONDS, visibility_seconds=dlq_visibility
        )
        self.queue = secure_queue(
            self,
            "Queue",
            retention_seconds=r.RETENTION_SECONDS,
            visibility_seconds=visibility,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=max_receive),
        )
