"""DynamoDB stream of the jobs table -> a "Job Status Change" event on the bus for every
terminal status, a message on the webhooks queue for each that asked for a callback, and the
outcome metrics the dashboard and alarms read: the counts by status, and for each end and claim
the metrics with dimensions, a log line and the operator's hourly counters
(batchscribe.job_metrics)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe.events import EventPublisher, status_change
from batchscribe.job_metrics import Outcomes, expired
from batchscribe.models import JobMessage, MessageReason
from batchscribe.outcomes import OUTCOMES_SERVICE
from batchscribe.queue import JobQueue
from batchscribe.repository import job_from_image
from batchscribe.settings import METRICS_NAMESPACE, NotifySettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service=OUTCOMES_SERVICE)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    changes = []
    settings = NotifySettings.from_env()
    outcomes = Outcomes.from_settings(settings)
    for record in event.get("Records", []):
        change = record.get("dynamodb", {})
        old, new = job_from_image(change.get("OldImage")), job_from_image(change.get("NewImage"))
        if new is None:
            if old is not None and record.get("eventName") == "REMOVE":
                expired(old)
            continue
        outcomes.see(old, new, record.get("eventName"))
        detail = status_change(old, new)
        if detail is None:
            continue
        metrics.add_metric(name=f"Jobs{new.status.value.capitalize()}", unit="Count", value=1)
        changes.append((new, detail))
    published = EventPublisher(settings.event_bus_name).publish(changes)
    callbacks = [job for job, _ in changes if job.callback is not None and job.callback.state == "pending"]
    if callbacks and settings.webhooks_queue_url:
        queue = JobQueue(settings.webhooks_queue_url)
        for job in callbacks:  # the record is the truth: the sender reads it again
            queue.send(JobMessage(job_id=job.job_id, reason=MessageReason.CALLBACK))
    outcomes.record()  # last: a batch that failed before it is delivered again
    logger.info("status events published", extra={"count": published, "callbacks": len(callbacks)})
    return {"published": published, "callbacks": len(callbacks)}
