"""Every minute and after each enqueue: start workers for the backlog (AWS Batch), one run at
a time under the scaler's lease; a wake that finds a run under way is served by its next round."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe.scaler import BatchCompute, Decision, run_scaler, scale, sqs_depth
from batchscribe.settings import METRICS_NAMESPACE, ScalerSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")
metrics = Metrics(namespace=METRICS_NAMESPACE, service="scaler")
MARGIN_SECONDS = 5  # a last round starts only if it can end this long before the function's timeout


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> list[dict[str, Any]]:
    settings = ScalerSettings.from_env()
    compute = BatchCompute(
        settings.worker_name_prefix, fallback_after=settings.spot_fallback_seconds, backoff=settings.start_backoff
    )
    until = time.time() + context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS
    runs = run_scaler(settings, lambda: scale(settings.pools, sqs_depth, compute), until)
    metrics.add_metric(name="ScalerRounds", unit="Count", value=len(runs.results))
    metrics.add_metric(name="ScalerWakesCoalesced", unit="Count", value=int(runs.coalesced))
    if runs.coalesced:
        logger.info("a scaler run is under way: this wake joins its next round")
        return []
    for pool_decisions in zip(*runs.results, strict=True):
        _count(pool_decisions)
    result = [asdict(d) for d in runs.results[-1]] if runs.results else []
    logger.info("scaled", extra={"decisions": result, "rounds": len(runs.results), "wakes": runs.wakes})
    return result


def _count(rounds: tuple[Decision, ...]) -> None:
    """One pool's metrics over this invocation's rounds: the last backlog and workers seen,
    the workers started and moved in all of them."""
    last = rounds[-1]
    metrics.add_metric(name=f"Backlog_{last.pool}", unit="Count", value=last.backlog)
    metrics.add_metric(name=f"ActiveWorkers_{last.pool}", unit="Count", value=last.active)
    metrics.add_metric(name=f"WorkersStarted_{last.pool}", unit="Count", value=sum(d.submitted for d in rounds))
    metrics.add_metric(name=f"WorkersMovedToOnDemand_{last.pool}", unit="Count", value=sum(d.moved for d in rounds))
    metrics.add_metric(
        name=f"WorkerStartsHeld_{last.pool}", unit="Count", value=sum(d.held_seconds > 0 for d in rounds)
    )
