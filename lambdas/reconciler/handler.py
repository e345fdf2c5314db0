"""AWS Batch "Job State Change" (a worker ended) -> requeue or fail the jobs it still held."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from batchscribe.lifecycle import Lifecycle
from batchscribe.settings import LifecycleSettings

logger = Logger(service="batchscribe")
tracer = Tracer(service="batchscribe")


class BatchJobDetail(BaseModel):
    """The part of a Batch Job State Change event's detail this handler reads."""

    model_config = ConfigDict(extra="ignore")

    jobId: str
    status: str
    arrayProperties: dict[str, Any] | None = None

    @property
    def worker_ended(self) -> bool:
        """A single worker (or one array child) ended; array parents report nothing of their own."""
        array_parent = self.arrayProperties is not None and "index" not in self.arrayProperties
        return self.status in ("SUCCEEDED", "FAILED") and not array_parent


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    detail = BatchJobDetail.model_validate(event.get("detail", {}))
    if not detail.worker_ended:
        return {"requeued": 0, "failed": 0}
    counts = asdict(Lifecycle.from_settings(LifecycleSettings.from_env()).worker_exited(detail.jobId))
    logger.info("worker exit reconciled", extra={"batch_job": detail.jobId, "status": detail.status, **counts})
    return counts
