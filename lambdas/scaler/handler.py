"""Every minute and after each enqueue: start workers for the backlog (AWS Batch), and move
workers Spot could not start to the on-demand queue."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe.scaler import BatchCompute, scale, sqs_depth
from batchscribe.settings import METRICS_NAMESPACE, ScalerSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="scaler")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> list[dict[str, Any]]:
    settings = ScalerSettings.from_env()
    compute = BatchCompute(settings.worker_name_prefix, fallback_after=settings.spot_fallback_seconds)
    decisions = scale(settings.pools, sqs_depth, compute)
    for d in decisions:
        metrics.add_metric(name=f"Backlog_{d.pool}", unit="Count", value=d.backlog)
        metrics.add_metric(name=f"ActiveWorkers_{d.pool}", unit="Count", value=d.active)
        metrics.add_metric(name=f"WorkersStarted_{d.pool}", unit="Count", value=d.submitted)
        metrics.add_metric(name=f"WorkersMovedToOnDemand_{d.pool}", unit="Count", value=d.moved)
    result = [asdict(d) for d in decisions]
    logger.info("scaled", extra={"decisions": result})
    return result
