"""The operator's questions, answered from the logs and the job metrics: saved CloudWatch Logs
Insights queries (one per question, over the notify function's one line per job end and claim,
the webhook function's line per delivery try) and the dashboard widgets that show the same
answers (the metrics with dimensions as SEARCH expressions, the queries as log widgets).

The log fields are the ones batchscribe.outcomes writes (`event`, `status`, `pool`, `model`,
`error_code`, `attempts`, `priority`, `queued_seconds`, `running_seconds`); the README's
"Operator statistics" lists each query with what it answers and an example result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_logs as logs
from constructs import Construct

from batchscribe.outcomes import (
    JOB_ATTEMPTS_METRIC,
    JOB_ENDED_EVENT,
    JOB_EXPIRED_EVENT,
    JOB_STARTED_EVENT,
    JOBS_ENDED_METRIC,
    OUTCOMES_SERVICE,
    TIME_QUEUED_METRIC,
    TIME_RUNNING_METRIC,
    WEBHOOK_OUTCOMES_METRIC,
    WEBHOOK_SERVICE,
    WEBHOOK_TRIED_EVENT,
)
from batchscribe.settings import METRICS_NAMESPACE

ENDED = f'event = "{JOB_ENDED_EVENT}"'
STARTED = f'event = "{JOB_STARTED_EVENT}"'


@dataclass(frozen=True)
class Question:
    """One saved query: its name (`<stack>/<name>` in the console), what it answers, the log
    group it reads (`notify` or `webhook`), and its lines."""

    name: str
    answers: str
    source: str
    lines: tuple[str, ...]

    @property
    def query(self) -> str:
        return "\n| ".join(self.lines)


QUESTIONS: tuple[Question, ...] = (
    Question(
        "FailuresByKind",
        "which kinds of job fail: failed jobs by error code, pool and model",
        "notify",
        (
            f'filter {ENDED} and status = "failed"',
            "stats count(*) as jobs by error_code, pool, model",
            "sort jobs desc",
        ),
    ),
    Question(
        "AttemptsToSucceed",
        "how many attempts a success needs (how flaky a pool or model is): mean and most, by pool and model",
        "notify",
        (
            f'filter {ENDED} and status = "succeeded"',
            "stats count(*) as jobs, avg(attempts) as mean_attempts, max(attempts) as most_attempts by pool, model",
            "sort mean_attempts desc",
        ),
    ),
    Question(
        "RetriedSuccesses",
        "which jobs needed more than one attempt to succeed (flaky sources): the latest 50",
        "notify",
        (
            f'filter {ENDED} and status = "succeeded" and attempts > 1',
            "fields @timestamp, job_id, pool, model, attempts, running_seconds",
            "sort @timestamp desc",
            "limit 50",
        ),
    ),
    Question(
        "LongestWaits",
        "which jobs waited longest before a worker took them (a starved fleet): the 50 longest",
        "notify",
        (
            f"filter {STARTED}",
            "fields @timestamp, job_id, pool, priority, attempt, queued_seconds",
            "sort queued_seconds desc",
            "limit 50",
        ),
    ),
    Question(
        "WaitByClass",
        "how long each pool's priority classes wait for a worker: mean, 95th percentile and most",
        "notify",
        (
            f"filter {STARTED}",
            "stats count(*) as claims, avg(queued_seconds) as mean_s, pct(queued_seconds, 95) as p95_s, "
            "max(queued_seconds) as most_s by pool, priority",
        ),
    ),
    Question(
        "ExpiredRecords",
        "the clean-up: job records DynamoDB's TTL deleted, per day and status",
        "notify",
        (
            f'filter event = "{JOB_EXPIRED_EVENT}"',
            "stats count(*) as records by bin(1d) as day, status",
            "sort day desc",
        ),
    ),
    Question(
        "WebhookOutcomes",
        "how job callbacks went: delivery tries by outcome",
        "webhook",
        (f'filter event = "{WEBHOOK_TRIED_EVENT}"', "stats count(*) as tries by outcome", "sort tries desc"),
    ),
)


class Insights(Construct):
    """The saved queries, each on its log group."""

    def __init__(self, scope: Construct, id: str, *, prefix: str, log_groups: Mapping[str, logs.ILogGroup]) -> None:
        super().__init__(scope, id)
        self.log_groups = log_groups
        self.definitions = {
            q.name: logs.QueryDefinition(
                self,
                q.name,
                query_definition_name=f"{prefix}/{q.name}",
                query_string=logs.QueryString(**_parts(q.lines)),
                log_groups=[log_groups[q.source]],
            )
            for q in QUESTIONS
        }

    def widgets(self) -> list[cw.IWidget]:
        """The dashboard's answers: the job metrics by their dimensions, then each query."""
        return [*_metric_widgets(), *[self._query_widget(q) for q in QUESTIONS]]

    def _query_widget(self, q: Question) -> cw.IWidget:
        return cw.LogQueryWidget(
            title=f"{q.name}: {q.answers}",
            log_group_names=[self.log_groups[q.source].log_group_name],
            query_lines=list(q.lines),
            view=cw.LogQueryVisualizationType.TABLE,
            width=12,
            height=6,
        )


def _parts(lines: tuple[str, ...]) -> dict[str, Any]:
    """A query's lines as QueryString's parts (it writes them back in the same order)."""
    filters: list[str] = []
    stats: list[str] = []
    out: dict[str, Any] = {}
    for line in lines:
        command, _, rest = line.partition(" ")
        if command in ("filter", "stats"):
            (filters if command == "filter" else stats).append(rest)
        elif command == "fields":
            out["fields"] = [f.strip() for f in rest.split(",")]
        elif command in ("sort", "limit"):
            out[command] = int(rest) if command == "limit" else rest
        else:
            raise ValueError(f"a query line QueryString cannot hold: {line}")
    return {**out, "filter_statements": filters or None, "stats_statements": stats or None}


def _search(metric: str, dims: str, stat: str, label: str, extra: str = "") -> cw.MathExpression:
    """Every series of a job metric with these dimensions (one line each), summed per hour."""
    text = f'{{{METRICS_NAMESPACE},service,{dims}}} MetricName="{metric}" service="{OUTCOMES_SERVICE}" {extra}'
    return cw.MathExpression(
        expression=f"SEARCH('{text.strip()}', '{stat}', 3600)", label=label, period=Duration.hours(1)
    )


def _metric_widgets() -> list[cw.IWidget]:
    dims = "status,pool,model,error_code"
    return [
        cw.GraphWidget(
            title="Failed jobs by error code, pool and model (per hour)",
            left=[_search(JOBS_ENDED_METRIC, dims, "Sum", "", 'status="failed"')],
            width=12,
        ),
        cw.GraphWidget(
            title="Attempts to succeed by pool and model (mean per hour)",
            left=[_search(JOB_ATTEMPTS_METRIC, "pool,model", "Average", "")],
            width=12,
        ),
        cw.GraphWidget(
            title="Time queued by pool and class (max per hour, s)",
            left=[_search(TIME_QUEUED_METRIC, "pool,priority", "Maximum", "")],
            width=8,
        ),
        cw.GraphWidget(
            title="Time running by pool (p90 per hour, s)",
            left=[_search(TIME_RUNNING_METRIC, "pool", "p90", "")],
            width=8,
        ),
        cw.GraphWidget(
            title="Webhook outcomes (per hour)",
            left=[
                cw.MathExpression(
                    expression=f"SEARCH('{{{METRICS_NAMESPACE},service,outcome}} "
                    f'MetricName="{WEBHOOK_OUTCOMES_METRIC}" service="{WEBHOOK_SERVICE}"\', \'Sum\', 3600)',
                    label="",
                    period=Duration.hours(1),
                )
            ],
            width=8,
        ),
    ]
