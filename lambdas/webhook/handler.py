"""Finished jobs with a callback (the webhooks queue) -> one signed POST each. A receiver that
does not answer 2xx is tried again later (the message comes back after a doubling wait), up to
`callback_max_attempts`; how each try went is on the job (`callback`)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from batchscribe import aws
from batchscribe.job_metrics import webhook_tried
from batchscribe.models import JobMessage
from batchscribe.repository import JobRepository
from batchscribe.settings import WebhookSettings
from batchscribe.webhooks import SendOutcome, WebhookSender

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
# a batch whose every callback must wait is not an error of the function (that would page)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class TryLater(Exception):
    """The record fails on purpose: SQS shows it again when the wait set on it is over."""


@aws.per_process
def settings() -> WebhookSettings:
    return WebhookSettings.from_env()


@aws.per_process
def sender() -> WebhookSender:
    s = settings()
    if s.signing_secret is not None:
        secret = s.signing_secret
    elif s.signing_secret_arn is not None:
        secret = aws.client("secretsmanager").get_secret_value(SecretId=s.signing_secret_arn)["SecretString"]
    else:
        raise RuntimeError("no signing secret configured (signing_secret_arn)")
    return WebhookSender(settings=s, repo=JobRepository(s.table_name), secret=secret.encode())


def record_handler(record: SQSRecord) -> None:
    try:
        message = JobMessage.model_validate_json(record.body)
    except ValidationError:
        logger.error("webhook message is not a job message", extra={"body": record.body[:500]})
        return
    sent = sender().send(message.job_id)
    webhook_tried(message.job_id, sent.outcome.value)  # WebhookOutcomes, with the outcome its dimension
    if sent.outcome is SendOutcome.RETRY:
        assert sent.retry_after is not None
        queue_url = aws.client("sqs").get_queue_url(QueueName=record.event_source_arn.rsplit(":", 1)[1])["QueueUrl"]
        aws.client("sqs").change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=sent.retry_after
        )
        raise TryLater(f"job {message.job_id}: callback not delivered; next try in {sent.retry_after} s")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
