"""Scheduled: fail jobs whose upload window closed, requeue jobs whose lease expired."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe.service import JobService
from batchscribe.settings import service_settings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace="Batchscribe", service="sweeper")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    counts = JobService.from_settings(service_settings()).sweep()
    for name, value in counts.items():
        metrics.add_metric(name=f"Swept_{name}", unit="Count", value=value)
    logger.info("sweep done", extra=counts)
    return counts
