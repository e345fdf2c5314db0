"""Messages that exhausted their receives on the jobs queue -> the job fails with
`retries_exhausted`, unless it already ended."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from batchscribe.models import JobMessage
from batchscribe.service import JobService
from batchscribe.settings import service_settings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace="Batchscribe", service="dead_letter")
processor = BatchProcessor(event_type=EventType.SQS)


@cache
def service() -> JobService:
    return JobService.from_settings(service_settings())


def record_handler(record: SQSRecord) -> None:
    try:
        message = JobMessage.model_validate_json(record.body)
    except ValidationError:
        # Not a job message: nothing to fail. Logged, then dropped (retrying cannot help).
        logger.error("dead-lettered message is not a job message", extra={"body": record.body[:500]})
        return
    outcome = service().dead_letter(message.job_id)
    if outcome == "failed":
        metrics.add_metric(name="JobsDeadLettered", unit="Count", value=1)
    logger.info("dead letter handled", extra={"job_id": message.job_id, "outcome": outcome})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
