"""Messages that exhausted their receives on a jobs queue -> sent again while the job has
attempts and re-sends left, else the job fails `retries_exhausted` (unless it already ended
or a live worker holds it)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from batchscribe import aws
from batchscribe.lifecycle import DeadLetterOutcome, Lifecycle
from batchscribe.models import JobMessage
from batchscribe.settings import METRICS_NAMESPACE, LifecycleSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="dead_letter")
processor = BatchProcessor(event_type=EventType.SQS)


@aws.per_process
def lifecycle() -> Lifecycle:
    return Lifecycle.from_settings(LifecycleSettings.from_env())


def record_handler(record: SQSRecord) -> None:
    try:
        message = JobMessage.model_validate_json(record.body)
    except ValidationError:
        # Not a job message: nothing to fail. Logged, then dropped (retrying cannot help).
        logger.error("dead-lettered message is not a job message", extra={"body": record.body[:500]})
        return
    outcome = lifecycle().dead_letter(message.job_id)
    if outcome is DeadLetterOutcome.FAILED:
        metrics.add_metric(name="JobsDeadLettered", unit="Count", value=1)
    elif outcome is DeadLetterOutcome.REDRIVEN:
        metrics.add_metric(name="JobsRedrivenFromDlq", unit="Count", value=1)
    logger.info("dead letter handled", extra={"job_id": message.job_id, "outcome": outcome.value})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
