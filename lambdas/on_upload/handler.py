"""S3 ObjectCreated notifications (via the uploads SQS queue) -> UploadIntake.accept, then
wake the scaler when something was queued.

Partial batch failures: a record that raises is retried alone; the rest are deleted."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from batchscribe import aws
from batchscribe.intake import UploadIntake, UploadOutcome
from batchscribe.settings import IntakeSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
processor = BatchProcessor(event_type=EventType.SQS)


class _S3Object(BaseModel):
    key: str
    size: int | None = None


class _S3Entity(BaseModel):
    object: _S3Object


class _S3Record(BaseModel):
    eventName: str
    s3: _S3Entity


class S3Notification(BaseModel):
    """An S3 event notification body; `Event: s3:TestEvent` bodies carry no Records."""

    Records: list[_S3Record] = []
    Event: str | None = None


@aws.per_process
def intake() -> UploadIntake:
    return UploadIntake.from_settings(IntakeSettings.from_env())


def keys_of(body: str) -> list[str]:
    """The object keys an SQS body announces (none for a test event); keys arrive URL-encoded."""
    note = S3Notification.model_validate_json(body)
    if note.Event == "s3:TestEvent":
        return []
    return [unquote_plus(r.s3.object.key) for r in note.Records if r.eventName.startswith("ObjectCreated")]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    queued: list[str] = []

    def record_handler(record: SQSRecord) -> None:
        for key in keys_of(record.body):
            outcome = intake().accept(key)
            logger.info("upload processed", extra={"key": key, "outcome": outcome.value})
            if outcome is UploadOutcome.QUEUED:
                queued.append(key)

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    if queued:
        intake().wake_scaler()
    return response
