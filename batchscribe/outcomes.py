"""What a job's start and end say to the operator: the facts of one transition, read from the
jobs table's stream (the old and the new image of the record), with every dimension drawn from
a closed set so that a metric never grows a series per job.

The stream carries each transition once, whoever made it (a worker's commit, the sweeper, the
dead-letter handler, the reconciler, a cancel through the API): a duplicate delivery of a job
message ends in a refused conditional write, which writes no stream record. So the notify
function, which reads the stream, is the one place that counts ends and starts.

Dimensions (each a closed set): status (the terminal statuses), pool (`POOL_NAMES`), model (a
name of the Whisper table, else `other`), error code (`errors.JOB_FAILURE_CODES`, else `other`;
`none` when the job did not fail), priority (`models.PRIORITIES`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from batchscribe.errors import JOB_FAILURE_CODES
from batchscribe.models import Job, JobStatus, Priority
from batchscribe.settings import RoutingSettings
from batchscribe.whisper_models import base_name, whisper_dims

PoolName = Literal["gpu", "cpu"]
POOL_NAMES: tuple[PoolName, ...] = ("gpu", "cpu")
OTHER = "other"  # a model or error code outside the closed set
NO_ERROR = "none"  # the error code dimension of a job that did not fail
ENDED_STATUSES: tuple[JobStatus, ...] = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

# the structured log lines the notify and webhook functions write (field `event`): the saved
# Logs Insights queries (stacks/constructs/insights.py) read them
JOB_ENDED_EVENT = "job_ended"
JOB_STARTED_EVENT = "job_started"
JOB_EXPIRED_EVENT = "job_expired"  # DynamoDB's TTL deleted a job record
WEBHOOK_TRIED_EVENT = "webhook_tried"  # the webhook function tried a job's callback once

# the EMF metrics (namespace settings.METRICS_NAMESPACE)
JOBS_ENDED_METRIC = "JobsEnded"  # Count; status x pool x model x error_code
JOB_ATTEMPTS_METRIC = "AttemptsToSucceed"  # Count (the attempts one succeeded job took); pool x model
TIME_QUEUED_METRIC = "TimeQueued"  # Seconds from queued to claimed, per claim; pool x priority
TIME_RUNNING_METRIC = "TimeRunning"  # Seconds from the last claim to the end; pool
WEBHOOK_OUTCOMES_METRIC = "WebhookOutcomes"  # Count; outcome (webhooks.SendOutcome)
OUTCOMES_SERVICE = "jobs"  # the `service` dimension of the notify function's metrics
WEBHOOK_SERVICE = "webhook"  # the `service` dimension of the webhook function's metrics


def model_label(model: str | None) -> str:
    """A model name as a dimension: the Whisper table's name for it (`small.en` for
    `Systran/faster-whisper-small.en`), else `other`."""
    if not model or whisper_dims(model) is None:
        return OTHER
    return base_name(model) + (".en" if model.endswith(".en") else "")


def error_label(code: str | None) -> str:
    if code is None:
        return NO_ERROR
    return code if code in JOB_FAILURE_CODES else OTHER


def pool_of(job: Job, routing: RoutingSettings | None) -> PoolName:
    """The pool that runs the job: the CPU pool for a small upload it serves, else the GPU pool
    (the rule the dispatcher sends by, `RoutingSettings.small_pool_takes`)."""
    size = job.input.size or job.input.declared_size
    if routing is not None and routing.small_pool_takes(size, job.options.model):
        return "cpu"
    return "gpu"


def model_of(job: Job, pool: PoolName, routing: RoutingSettings | None, default_model: str | None) -> str:
    """The model that ran (or would have run) the job, as a dimension: the result's, else the
    one it asked for, else its pool's."""
    if job.result is not None:
        return model_label(job.result.model)
    if job.options.model:
        return model_label(job.options.model)
    pool_model = routing.small_job_model if pool == "cpu" and routing is not None else default_model
    return model_label(pool_model)


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    delta = datetime.fromisoformat(end).timestamp() - datetime.fromisoformat(start).timestamp()
    return round(max(0.0, delta), 3)


@dataclass(frozen=True)
class Dimensions:
    """How to read a job's pool and model: the deployment's routing and its GPU pool's model."""

    routing: RoutingSettings | None = None
    default_model: str | None = None

    def of(self, job: Job) -> tuple[PoolName, str]:
        pool = pool_of(job, self.routing)
        return pool, model_of(job, pool, self.routing, self.default_model)


@dataclass(frozen=True)
class JobEnd:
    """A job reached a terminal status."""

    job_id: str
    status: str
    pool: PoolName
    model: str
    error_code: str
    priority: Priority
    attempts: int
    running_seconds: float | None  # from its last claim, when it ended from running
    ttl: int

    def log_fields(self) -> dict[str, Any]:
        return {"event": JOB_ENDED_EVENT, **asdict(self)}


@dataclass(frozen=True)
class JobStart:
    """A worker claimed a queued job."""

    job_id: str
    pool: PoolName
    priority: Priority
    attempt: int
    queued_seconds: float | None

    def log_fields(self) -> dict[str, Any]:
        return {"event": JOB_STARTED_EVENT, **asdict(self)}


def job_end(old: Job | None, new: Job, dims: Dimensions) -> JobEnd | None:
    """The end this change records, or None when it is not one (the same status written again,
    or a status that is not terminal)."""
    if not new.status.terminal or (old is not None and old.status == new.status):
        return None
    pool, model = dims.of(new)
    from_running = old is not None and old.status is JobStatus.RUNNING
    return JobEnd(
        job_id=new.job_id,
        status=new.status.value,
        pool=pool,
        model=model,
        error_code=error_label(new.error.code if new.error else None),
        priority=new.priority,
        attempts=new.attempt,
        running_seconds=seconds_between(new.started_at, new.finished_at) if from_running else None,
        ttl=new.ttl,
    )


def job_start(old: Job | None, new: Job, dims: Dimensions) -> JobStart | None:
    """The claim this change records (queued -> running), or None. Its wait began when the job
    was queued (`queued_at`) for a first attempt, else when it was given back (the record's
    last write before the claim: a re-send of its message by the sweeper also counts as one)."""
    if old is None or old.status is not JobStatus.QUEUED or new.status is not JobStatus.RUNNING:
        return None
    waited_from = old.queued_at if old.attempt == 0 else old.updated_at
    pool, _ = dims.of(new)
    return JobStart(
        job_id=new.job_id,
        pool=pool,
        priority=new.priority,
        attempt=new.attempt,
        queued_seconds=seconds_between(waited_from, new.started_at),
    )
