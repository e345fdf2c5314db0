"""AWS Batch "Job State Change" (a worker ended) -> requeue or fail the jobs it still held."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from batchscribe.resources import JOBS_MAX_RECEIVE_COUNT
from batchscribe.service import JobService, worker_exited
from batchscribe.settings import service_settings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    detail = event.get("detail", {})
    ended = detail.get("status") in ("SUCCEEDED", "FAILED")
    array_parent = "arrayProperties" in detail and "index" not in detail["arrayProperties"]
    if not ended or array_parent:
        return {"requeued": 0, "failed": 0}  # live workers; array parents (each child reports itself)
    counts = worker_exited(JobService.from_settings(service_settings()), detail["jobId"], JOBS_MAX_RECEIVE_COUNT)
    logger.info("worker exit reconciled", extra={"batch_job": detail["jobId"], "status": detail["status"], **counts})
    return counts
