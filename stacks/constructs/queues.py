"""Queues, each with a dead-letter queue: jobs (GPU), small jobs (CPU), uploads. SSE, TLS
only, visibility sized for the worker heartbeat, DLQs kept longer than their sources."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe import resources as r


class QueuePair(Construct):
    def __init__(self, scope: Construct, id: str, *, visibility: int, max_receive: int) -> None:
        super().__init__(scope, id)
        self.dlq = sqs.Queue(
            self,
            "Dlq",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.seconds(r.DLQ_RETENTION_SECONDS),
            visibility_timeout=Duration.minutes(6),  # the dead_letter function reads it (timeout 1 min)
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


class Queues(Construct):
    def __init__(self, scope: Construct, id: str, *, cpu_pool: bool) -> None:
        super().__init__(scope, id)
        self.jobs = QueuePair(self, "Jobs", visibility=r.JOBS_VISIBILITY_SECONDS, max_receive=r.JOBS_MAX_RECEIVE_COUNT)
        self.small_jobs = (
            QueuePair(self, "SmallJobs", visibility=r.JOBS_VISIBILITY_SECONDS, max_receive=r.JOBS_MAX_RECEIVE_COUNT)
            if cpu_pool
            else None
        )
        # on_upload's timeout must be below this visibility (Lambda's SQS rule)
        self.uploads = QueuePair(
            self, "Uploads", visibility=r.UPLOADS_VISIBILITY_SECONDS * 6, max_receive=r.UPLOADS_MAX_RECEIVE_COUNT
        )

    @property
    def job_pairs(self) -> list[QueuePair]:
        return [p for p in (self.jobs, self.small_jobs) if p is not None]
