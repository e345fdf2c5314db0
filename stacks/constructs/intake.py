"""Intake: an upload lands in S3 -> the uploads queue -> on_upload checks it, queues its job
for the pool that runs it, and wakes the scaler."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from constructs import Construct

from batchscribe.keys import UPLOADS_PREFIX
from batchscribe.resources import UPLOADS_MAX_RECEIVE_COUNT
from batchscribe.settings import IntakeSettings
from stacks.constructs.jobs import READ_TRANSITION
from stacks.constructs.queues import QueuePair
from stacks.constructs.wiring import Wiring


class Intake(Construct):
    def __init__(self, scope: Construct, id: str, wiring: Wiring, *, scaler: lambda_.IFunction) -> None:
        super().__init__(scope, id)
        config, jobs, compute = wiring.config, wiring.jobs, wiring.compute
        t = config.timings
        self.uploads = QueuePair(
            self,
            "Uploads",
            visibility=t.uploads_visibility_seconds,
            max_receive=UPLOADS_MAX_RECEIVE_COUNT,
            dlq_visibility=t.dlq_visibility_seconds,
        )
        jobs.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.SqsDestination(self.uploads.queue),
            s3.NotificationKeyFilter(prefix=UPLOADS_PREFIX),
        )
        self.function = wiring.functions.add(
            self,
            "on_upload",
            IntakeSettings(
                **jobs.store,
                **compute.routing.model_dump(),
                max_upload_bytes=config.max_upload_bytes,
                scaler_function_name=scaler.function_name,
            ),
            timeout=Duration.seconds(t.intake_timeout_seconds),
            memory=512,
        )
        jobs.grant_table(self.function, READ_TRANSITION)
        jobs.bucket.grant_read(self.function, f"{UPLOADS_PREFIX}*")  # HeadObject
        jobs.bucket.grant_delete(self.function, f"{UPLOADS_PREFIX}*")  # rejected uploads
        compute.grant_send(self.function)
        scaler.grant_invoke(self.function)
        self.function.add_event_source(
            sources.SqsEventSource(self.uploads.queue, batch_size=10, report_batch_item_failures=True)
        )
