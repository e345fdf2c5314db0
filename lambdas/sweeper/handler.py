"""Scheduled: fail jobs whose upload window closed, requeue jobs whose lease expired."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe.lifecycle import Lifecycle
from batchscribe.settings import METRICS_NAMESPACE, LifecycleSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="sweeper")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    counts = asdict(Lifecycle.from_settings(LifecycleSettings.from_env()).sweep())
    for name, value in counts.items():
        metrics.add_metric(name=f"Swept_{name}", unit="Count", value=value)
    logger.info("sweep done", extra=counts)
    return counts
