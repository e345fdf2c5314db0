"""A queue with its dead-letter queue: SSE, TLS only, the DLQ kept longer than its source."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe import resources as r


class QueuePair(Construct):
    def __init__(self, scope: Construct, id: str, *, visibility: int, max_receive: int, dlq_visibility: int) -> None:
        super().__init__(scope, id)
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.seconds(r.DLQ_RETENTION_SECONDS),
            visibility_timeout=Duration.seconds(dlq_visibility),
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=Duration.seconds(visibility),
            retention_period=Duration.seconds(r.RETENTION_SECONDS),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=max_receive),
        )
