"""The job metrics with dimensions, as CloudWatch embedded metric format (EMF) lines through
Powertools: one line per metric, each with its own dimensions (a function's `Metrics` object
holds one set of dimensions per flush; a stream batch holds jobs of many pools and models).
What each says and its closed dimension sets: batchscribe.outcomes. Also the one log line per
job end and claim the saved Logs Insights queries read, and the operator's hourly counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from batchscribe.models import Job
from batchscribe.outcomes import (
    JOB_ATTEMPTS_METRIC,
    JOB_EXPIRED_EVENT,
    JOBS_ENDED_METRIC,
    OUTCOMES_SERVICE,
    TIME_QUEUED_METRIC,
    TIME_RUNNING_METRIC,
    WEBHOOK_OUTCOMES_METRIC,
    WEBHOOK_SERVICE,
    WEBHOOK_TRIED_EVENT,
    Dimensions,
    JobEnd,
    JobStart,
    job_end,
    job_start,
)
from batchscribe.repository.stats import StatsCounters
from batchscribe.settings import METRICS_NAMESPACE, NotifySettings

logger = Logger(service="batchscribe", child=True)


def _emit(name: str, unit: MetricUnit, value: float, dimensions: Mapping[str, str], service: str) -> None:
    # single_metric prints whatever POWERTOOLS_METRICS_DISABLED says (the Metrics class heeds
    # it): the local stack, which runs these handlers in its own process, sets it to keep the
    # EMF lines off its terminal
    if is_metrics_disabled():
        return
    with single_metric(
        name=name, unit=unit, value=value, namespace=METRICS_NAMESPACE, default_dimensions={"service": service}
    ) as metric:
        for key, text in dimensions.items():
            metric.add_dimension(name=key, value=text)


def emit_end(end: JobEnd) -> None:
    """JobsEnded (status x pool x model x error_code); for a success AttemptsToSucceed (pool x
    model); for an end from running TimeRunning (pool)."""
    dims = {"status": end.status, "pool": end.pool, "model": end.model, "error_code": end.error_code}
    _emit(JOBS_ENDED_METRIC, MetricUnit.Count, 1, dims, OUTCOMES_SERVICE)
    if end.status == "succeeded":
        pool_model = {"pool": end.pool, "model": end.model}
        _emit(JOB_ATTEMPTS_METRIC, MetricUnit.Count, end.attempts, pool_model, OUTCOMES_SERVICE)
    if end.running_seconds is not None:
        _emit(TIME_RUNNING_METRIC, MetricUnit.Seconds, end.running_seconds, {"pool": end.pool}, OUTCOMES_SERVICE)


def emit_start(start: JobStart) -> None:
    """TimeQueued (pool x priority), one per claim."""
    if start.queued_seconds is not None:
        dims = {"pool": start.pool, "priority": start.priority}
        _emit(TIME_QUEUED_METRIC, MetricUnit.Seconds, start.queued_seconds, dims, OUTCOMES_SERVICE)


def webhook_tried(job_id: str, outcome: str) -> None:
    """One try of a job's callback: WebhookOutcomes (outcome: webhooks.SendOutcome) and the log
    line the WebhookOutcomes query reads."""
    _emit(WEBHOOK_OUTCOMES_METRIC, MetricUnit.Count, 1, {"outcome": outcome}, WEBHOOK_SERVICE)
    logger.info("webhook", extra={"event": WEBHOOK_TRIED_EVENT, "job_id": job_id, "outcome": outcome})


@dataclass
class Outcomes:
    """What the notify function records of each change in a stream batch, once the batch's
    events and callbacks are sent (a batch that fails before is delivered again, and would
    count twice): its ends and claims as metrics and log lines, and in the hourly counters (an
    end, and a created job's expiry hour) when the function has the table."""

    dims: Dimensions
    counters: StatsCounters | None
    ends: list[tuple[JobEnd, float]] = field(default_factory=list)
    starts: list[JobStart] = field(default_factory=list)
    created: list[int] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: NotifySettings) -> Outcomes:
        counters = StatsCounters(settings.table_name) if settings.table_name else None
        return cls(Dimensions(settings.routing, settings.default_model), counters)

    def see(self, old: Job | None, new: Job, event_name: str | None) -> None:
        end = job_end(old, new, self.dims)
        if end is not None:
            finished = new.finished_at or new.updated_at
            self.ends.append((end, datetime.fromisoformat(finished).timestamp()))
        start = job_start(old, new, self.dims)
        if start is not None:
            self.starts.append(start)
        if old is None and event_name == "INSERT":
            self.created.append(new.ttl)

    def record(self) -> None:
        for end, at in self.ends:
            emit_end(end)
            logger.info("job ended", extra=end.log_fields())
            if self.counters is not None:
                self.counters.count_end(end, at)
        for start in self.starts:
            emit_start(start)
            logger.info("job started", extra=start.log_fields())
        if self.counters is not None:
            for ttl in self.created:
                self.counters.count_created(ttl)


def expired(old: Job) -> None:
    """DynamoDB's TTL deleted a job record: one line (the clean-up query counts them)."""
    logger.info(
        "job record expired",
        extra={"event": JOB_EXPIRED_EVENT, "job_id": old.job_id, "status": old.status.value, "ttl": old.ttl},
    )
