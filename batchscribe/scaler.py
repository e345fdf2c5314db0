"""Scaling lives in the workers, not the API: this decides how many worker processes to
start, from the queue backlog and the workers already active, per pool (GPU, CPU).

The decision is plain code behind a `Compute` interface: AWS Batch when deployed
(`BatchCompute`), local processes in the local stack. Workers exit on their own when idle,
so scaling down is theirs; the scaler only ever adds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from batchscribe import aws
from batchscribe.queue import ClassQueues
from batchscribe.resources import WORKER_NAME_PREFIX
from batchscribe.settings import Pool

ACTIVE_BATCH_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")


class Compute(Protocol):
    def active(self, pool: Pool) -> int:
        """Workers of this pool submitted or running now."""
        ...

    def submit(self, pool: Pool, count: int) -> None:
        """Start `count` more workers of this pool."""
        ...


def plan(backlog: int, active: int, max_workers: int, jobs_per_worker: int) -> int:
    """How many workers to add: enough for the backlog, never more than the cap."""
    wanted = min(max_workers, math.ceil(backlog / jobs_per_worker)) if backlog > 0 else 0
    return max(0, wanted - active)


QueueDepth = Callable[[Pool], tuple[int, int]]


@dataclass
class Decision:
    pool: str
    backlog: int
    active: int
    submitted: int


def scale(pools: list[Pool], depth: QueueDepth, compute: Compute) -> list[Decision]:
    decisions = []
    for pool in pools:
        visible, in_flight = depth(pool)
        backlog = visible + in_flight
        active = compute.active(pool) if backlog else 0
        n = plan(backlog, active, pool.max_workers, pool.jobs_per_worker)
        if n:
            compute.submit(pool, n)
        decisions.append(Decision(pool.name, backlog, active, n))
    return decisions


def sqs_depth(pool: Pool) -> tuple[int, int]:
    """The pool's backlog over its priority classes, each weighted (resources.SCALE_WEIGHTS):
    urgent work brings capacity sooner, low work less of it, and any backlog at least one worker."""
    return ClassQueues(pool.queue_url, pool.class_queue_urls).weighted_depth()


class BatchCompute:
    """Workers as AWS Batch jobs; more than one at a time goes as one array job."""

    def __init__(self, name_prefix: str = WORKER_NAME_PREFIX, clock: Callable[[], float] = time.time) -> None:
        self.prefix = name_prefix
        self.clock = clock

    @property
    def _batch(self) -> Any:
        return aws.client("batch")

    def active(self, pool: Pool) -> int:
        total = 0
        name = f"{self.prefix}-{pool.name}"
        pages = self._batch.get_paginator("list_jobs")
        for status in ACTIVE_BATCH_STATUSES:
            for page in pages.paginate(jobQueue=pool.job_queue, jobStatus=status):
                for job in page.get("jobSummaryList", []):
                    # array children ("parent:index") are counted through their parent's size
                    if job.get("jobName", "").startswith(name) and ":" not in job.get("jobId", ""):
                        total += int(job.get("arrayProperties", {}).get("size", 1) or 1)
        return total

    def submit(self, pool: Pool, count: int) -> None:
        kwargs: dict[str, Any] = {
            "jobName": f"{self.prefix}-{pool.name}-{int(self.clock())}",
            "jobQueue": pool.job_queue,
            "jobDefinition": pool.job_definition,
        }
        if count > 1:
            kwargs["arrayProperties"] = {"size": count}
        self._batch.submit_job(**kwargs)


class ScalerTrigger:
    """Runs the scaler function now (asynchronously), when the deployment names one."""

    def __init__(self, function_name: str | None) -> None:
        self.function_name = function_name

    def wake(self) -> bool:
        if not self.function_name:
            return False
        aws.client("lambda").invoke(FunctionName=self.function_name, InvocationType="Event", Payload=b"{}")
        return True
