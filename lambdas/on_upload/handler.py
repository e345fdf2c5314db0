"""S3 ObjectCreated notifications (via the uploads SQS queue) -> JobService.accept_upload.

Partial batch failures: a record that raises is retried alone; the rest are deleted."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from batchscribe import aws
from batchscribe.service import JobService
from batchscribe.settings import service_settings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
processor = BatchProcessor(event_type=EventType.SQS)


class _S3Object(BaseModel):
    key: str
    size: int | None = None


class _S3Entity(BaseModel):
    object: _S3Object


class _S3Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    eventName: str
    s3: _S3Entity


class S3Notification(BaseModel):
    """An S3 event notification body; `Event: s3:TestEvent` bodies carry no Records."""

    Records: list[_S3Record] = []
    Event: str | None = None


@cache
def service() -> JobService:
    return JobService.from_settings(service_settings())


def keys_of(body: str) -> list[str]:
    """The object keys an SQS body announces (none for a test event); keys arrive URL-encoded."""
    note = S3Notification.model_validate_json(body)
    if note.Event == "s3:TestEvent":
        return []
    return [unquote_plus(r.s3.object.key) for r in note.Records if r.eventName.startswith("ObjectCreated")]


_queued: list[str] = []


def record_handler(record: SQSRecord) -> None:
    for key in keys_of(record.body):
        outcome = service().accept_upload(key)
        logger.info("upload processed", extra={"key": key, "outcome": outcome})
        if outcome == "queued":
            _queued.append(key)


def wake_scaler() -> None:
    """New work: run the scaler now rather than at the next minute (asynchronously; the
    schedule is the safety net if this fails)."""
    name = service().settings.scaler_function_name
    if not name:
        return
    try:
        aws.client("lambda").invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    except Exception:
        logger.warning("could not wake the scaler", exc_info=True)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    _queued.clear()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    if _queued:
        wake_scaler()
    return response
