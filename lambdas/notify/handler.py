"""DynamoDB stream of the jobs table -> a "Job Status Change" event on the default bus for
every terminal status, and the outcome metrics the dashboard and alarms read."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from boto3.dynamodb.types import TypeDeserializer

from batchscribe import aws
from batchscribe.events import DETAIL_TYPE, EVENT_SOURCE, status_change
from batchscribe.models import Job
from batchscribe.repository import _plain

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace="Batchscribe", service="jobs")
_de = TypeDeserializer()


def _job(image: dict[str, Any] | None) -> Job | None:
    if not image or "owner" not in image:
        return None  # idempotency records and deletions are not jobs
    data = {k: _plain(_de.deserialize(v)) for k, v in image.items()}
    data.pop("sweep_status", None)
    data.pop("sweep_at", None)
    return Job.model_validate(data)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    entries = []
    for record in event.get("Records", []):
        change = record.get("dynamodb", {})
        new = _job(change.get("NewImage"))
        if new is None:
            continue
        detail = status_change(_job(change.get("OldImage")), new)
        if detail is None:
            continue
        metrics.add_metric(name=f"Jobs{new.status.value.capitalize()}", unit="Count", value=1)
        entries.append(
            {
                "Source": EVENT_SOURCE,
                "DetailType": DETAIL_TYPE,
                "Detail": json.dumps(detail),
                "Resources": [new.job_id],
            }
        )
    for i in range(0, len(entries), 10):
        resp = aws.client("events").put_events(Entries=entries[i : i + 10])
        if resp.get("FailedEntryCount"):
            raise RuntimeError(f"{resp['FailedEntryCount']} events were not accepted; the batch is retried")
    logger.info("status events published", extra={"count": len(entries)})
    return {"published": len(entries)}
