"""Alarms (each with a runbook entry in docs/operations.md) and one dashboard, through
cdk-monitoring-constructs (cdklabs): its MonitoringFacade makes every alarm and dashboard
section from a library threshold — a queue and its dead-letter queue, a function, the API —
and the job metrics the services publish are its custom metric groups. What stays here is
the deployment's choice: which thresholds, their names (the runbook in docs/operations.md names them),
their descriptions, and the alarm topic they notify."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_dynamodb as ddb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from cdk_monitoring_constructs import (
    AlarmFactoryDefaults,
    CustomMetricGroup,
    CustomMetricWithAlarm,
    CustomThreshold,
    DefaultDashboardFactory,
    ErrorCountThreshold,
    MaxMessageAgeThreshold,
    MaxMessageCountThreshold,
    MonitoringFacade,
    SnsAlarmActionStrategy,
    ThrottledEventsThreshold,
)
from constructs import Construct

from batchscribe.outcomes import OUTCOMES_SERVICE
from batchscribe.resources import WORKER_NOT_STARTED
from batchscribe.settings import METRICS_NAMESPACE
from stacks.config import DeploymentConfig
from stacks.constructs.insights import Insights
from stacks.constructs.queues import QueuePair

NAMESPACE = METRICS_NAMESPACE
FAILED_RATE_THRESHOLD = 0.2
PAGE = "Critical"  # the library's disambiguator: every alarm here notifies the one topic
WORKERS_NOT_STARTED = "WorkersNotStarted"  # the metric the worker log group's filter counts


@dataclass(frozen=True)
class WatchedQueue:
    """A queue and its dead-letter queue: alarmed when the DLQ holds a message, and, for a job
    queue (`max_age_seconds` set), when its oldest message waited longer (starvation)."""

    pair: QueuePair
    max_age_seconds: int | None = None


RUNBOOKS = "docs/operations.md"  # where the alarms' runbooks are, by name


def runbook(name: str, page: str = RUNBOOKS) -> str:
    """The pointer an alarm's description ends with (a template test finds each one there)."""
    return f"Runbook: {page} '{name}'."


def _jobs_metric(name: str) -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": OUTCOMES_SERVICE},
        statistic="Sum",
        period=Duration.minutes(15),
    )


def _workers_metric(kind: str, pool: str) -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=f"{kind}_{pool}",
        dimensions_map={"service": "scaler"},
        statistic="Maximum",
        period=Duration.minutes(1),
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        queues: Mapping[str, WatchedQueue],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        api: apigw.RestApi,
        functions: Mapping[str, lambda_.IFunction],
        table: ddb.ITable,
        indexes: Sequence[str],
        worker_logs: logs.ILogGroup,
    ) -> None:
        super().__init__(scope, id)
        self.prefix = config.stack_name
        self.key, self.topic = self._alarm_topic(config.alarm_email)
        self.facade = MonitoringFacade(
            self,
            "Facade",
            alarm_factory_defaults=AlarmFactoryDefaults(
                alarm_name_prefix=self.prefix,
                actions_enabled=True,
                action=SnsAlarmActionStrategy(on_alarm_topic=self.topic),
                datapoints_to_alarm=1,  # one period over the threshold alarms
            ),
            dashboard_factory=DefaultDashboardFactory(self, "Dashboards", dashboard_name_prefix=f"{self.prefix}-jobs"),
        )
        self._watch_jobs({label: w.pair.queue for label, w in queues.items() if w.max_age_seconds is not None})
        for label, watched in queues.items():
            self._watch_queue(label, watched)
        for label, dlq in dead_letter_queues.items():
            self._watch_dead_letter_queue(label, dlq)
        self._watch_api(api)
        for name, fn in functions.items():
            self._watch_function(name, fn)
        self._watch_table(table, indexes)
        self._watch_worker_starts(worker_logs)
        self._answer_operator_questions(functions)

    def _answer_operator_questions(self, functions: Mapping[str, lambda_.IFunction]) -> None:
        """The saved Logs Insights queries, and a dashboard section with their answers and the
        job metrics by dimension (stacks/constructs/insights.py)."""
        log_groups = {name.lower(): functions[name.capitalize()].log_group for name in ("notify", "webhook")}
        self.insights = Insights(self, "Insights", prefix=self.prefix, log_groups=log_groups)
        self.facade.add_large_header("Operator questions: failures, attempts, waits, clean-up")
        for widget in self.insights.widgets():
            self.facade.add_widget(widget)

    def _alarm_topic(self, email: str | None) -> tuple[kms.Key, sns.Topic]:
        """A customer-managed key: CloudWatch cannot use the AWS-managed alias/aws/sns key, so
        alarms published to a topic encrypted with it are dropped. This key lets CloudWatch encrypt
        what it publishes, and the topic policy lets CloudWatch (this account's alarms) publish at
        all: the TLS-only policy CDK writes replaces SNS's default one."""
        key = kms.Key(
            self,
            "AlarmsKey",
            description="Batchscribe alarm topic: CloudWatch alarms publish through it",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # in a key policy, "*" is this key
        key.add_to_resource_policy(self._cloudwatch_may(["kms:Decrypt", "kms:GenerateDataKey*"], "*"))
        topic = sns.Topic(self, "Alarms", display_name="Batchscribe alarms", enforce_ssl=True, master_key=key)
        stack = Stack.of(self)
        alarms = f"arn:{stack.partition}:cloudwatch:*:{stack.account}:alarm:*"
        topic.add_to_resource_policy(self._cloudwatch_may(["sns:Publish"], topic.topic_arn, source=alarms))
        if email:
            topic.add_subscription(subs.EmailSubscription(email))
        return key, topic

    def _cloudwatch_may(self, actions: list[str], resource: str, *, source: str | None = None) -> iam.PolicyStatement:
        """Let this account's CloudWatch alarms (of `source`, when given) use `resource`."""
        conditions: dict[str, Any] = {"StringEquals": {"aws:SourceAccount": Stack.of(self).account}}
        if source:
            conditions["ArnLike"] = {"aws:SourceArn": source}
        return iam.PolicyStatement(
            sid="CloudWatchAlarmsPublish",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=actions,
            resources=[resource],
            conditions=conditions,
        )

    def _alarm(self, name: str, description: str) -> dict[str, Any]:
        """What every threshold here shares: the runbook's name for the alarm, its description,
        and no alarm on periods without data (an idle deployment publishes nothing)."""
        return {
            "alarm_name_override": f"{self.prefix}-{name}",
            "alarm_description_override": description,
            "treat_missing_data_override": cw.TreatMissingData.NOT_BREACHING,
        }

    def _dead_letters(self, label: str) -> dict[str, MaxMessageCountThreshold]:
        description = f"Messages in the {label} dead-letter queue. Runbook: docs/operations.md 'DLQ redrive'."
        return {PAGE: MaxMessageCountThreshold(max_message_count=0, **self._alarm(f"{label}DeadLetters", description))}

    def _watch_queue(self, label: str, watched: WatchedQueue) -> None:
        """A queue with its DLQ; per priority class, the age of a job queue's oldest message is
        alarmed past the class's threshold (a low job waiting long under load is the design; a
        normal one is starvation)."""
        starving: dict[str, MaxMessageAgeThreshold] = {}
        if (limit := watched.max_age_seconds) is not None:
            description = (
                f"A {label} job waited over {limit // 60} min: no worker is taking work, or higher classes "
                "take it all. Runbook: docs/operations.md 'Starvation'."
            )
            starving[PAGE] = MaxMessageAgeThreshold(
                max_age_in_seconds=limit, **self._alarm(f"{label}Starvation", description)
            )
        self.facade.monitor_sqs_queue_with_dlq(
            queue=watched.pair.queue,
            dead_letter_queue=watched.pair.dlq,
            alarm_friendly_name=label,
            human_readable_name=f"{label} queue",
            add_queue_max_message_age_alarm=starving,
            add_dead_letter_queue_max_size_alarm=self._dead_letters(label),
        )

    def _watch_dead_letter_queue(self, label: str, dlq: sqs.IQueue) -> None:
        """A queue that is itself a dead-letter destination (of an event source mapping)."""
        self.facade.monitor_sqs_queue(
            queue=dlq,
            alarm_friendly_name=label,
            human_readable_name=f"{label} dead-letter queue",
            add_queue_max_size_alarm=self._dead_letters(label),
        )

    def _watch_api(self, api: apigw.RestApi) -> None:
        """Requests, latency p50/p90/p99 and errors of the API's stage; any 5xx alarms."""
        self.facade.monitor_api_gateway(
            api=api,
            api_stage=api.deployment_stage.stage_name,
            alarm_friendly_name="Api",
            human_readable_name="Job API",
            add5_xx_fault_count_alarm={
                PAGE: ErrorCountThreshold(
                    max_error_count=0, **self._alarm("Api5xx", "The API answered 5xx. " + runbook("API errors"))
                )
            },
        )

    def _watch_function(self, name: str, fn: lambda_.IFunction) -> None:
        """Any error, and any throttled invocation: a new account's concurrency quota (10) shows up
        here first, long before jobs starve."""
        description = f"The {name} function raised. Runbook: docs/operations.md 'Lambda errors'."
        throttled = f"Lambda throttled the {name} function (account concurrency used up). {runbook('Throttling')}"
        self.facade.monitor_lambda_function(
            lambda_function=fn,
            alarm_friendly_name=name,
            human_readable_name=f"{name} function",
            add_fault_count_alarm={
                PAGE: ErrorCountThreshold(max_error_count=0, **self._alarm(f"{name}Errors", description))
            },
            add_throttles_count_alarm={
                PAGE: ErrorCountThreshold(max_error_count=0, **self._alarm(f"{name}Throttles", throttled))
            },
        )

    def _throttled(self, label: str, what: str) -> dict[str, ThrottledEventsThreshold]:
        description = f"DynamoDB throttled {what}. Runbook: docs/operations.md 'Throttling'."
        return {PAGE: ThrottledEventsThreshold(max_throttled_events_threshold=0, **self._alarm(label, description))}

    def _watch_table(self, table: ddb.ITable, indexes: Sequence[str]) -> None:
        """Throttled reads and writes of the jobs table and of each index (an index that cannot take
        its writes throttles the table's own writes: a hot partition key shows up here)."""
        self.facade.monitor_dynamo_table(
            table=table,
            billing_mode=ddb.BillingMode.PAY_PER_REQUEST,
            alarm_friendly_name="JobsTable",
            human_readable_name="Jobs table",
            add_read_throttled_events_count_alarm=self._throttled("JobsTableReadThrottles", "reads of the jobs table"),
            add_write_throttled_events_count_alarm=self._throttled(
                "JobsTableWriteThrottles", "writes to the jobs table"
            ),
        )
        for index in indexes:
            label = "Jobs" + "".join(part.capitalize() for part in index.split("_"))
            self.facade.monitor_dynamo_table_global_secondary_index(
                table=table,
                global_secondary_index_name=index,
                alarm_friendly_name=label,
                human_readable_name=f"Jobs table index {index}",
                add_read_throttled_events_count_alarm=self._throttled(
                    f"{label}ReadThrottles", f"reads of the {index} index"
                ),
                add_write_throttled_events_count_alarm=self._throttled(
                    f"{label}WriteThrottles", f"writes to the {index} index"
                ),
            )

    def _watch_worker_starts(self, worker_logs: logs.ILogGroup) -> None:
        """Workers that exited before their first claim (the GPU preflight, the engine's load, their
        settings: exit 69, 70 or 78), counted from the one line each logs (its `event`), by a metric
        filter on the workers' log group. Chosen over an EventBridge rule on Batch's FAILED job
        state changes: the line is already there and names the cause, and a filter is one resource,
        where a rule would need a function (and its role) to turn events into a metric. Batch still
        records each such worker's job as FAILED with its exit code (never retried:
        compute.py), and no job spends an attempt on it."""
        counted = logs.MetricFilter(
            self,
            WORKERS_NOT_STARTED,
            log_group=worker_logs,
            metric_namespace=NAMESPACE,
            metric_name=WORKERS_NOT_STARTED,
            filter_pattern=logs.FilterPattern.string_value("$.event", "=", WORKER_NOT_STARTED),
            metric_value="1",
        )
        description = (
            "A worker exited before claiming anything: its GPU failed the preflight (exit 69), its engine "
            "did not load (70) or its settings are wrong (78). Runbook: docs/design.md 'GPU preflight'."
        )
        alarm = CustomThreshold(
            threshold=0,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            **self._alarm("WorkersNotStarting", description),
        )
        metric = counted.metric(statistic="Sum", period=Duration.minutes(5), label="workers that could not start")
        self.facade.monitor_custom(
            alarm_friendly_name="WorkerStarts",
            human_readable_name="Workers that could not start",
            metric_groups=[
                CustomMetricGroup(
                    title="Workers that could not start (preflight, engine, settings)",
                    metrics=[
                        CustomMetricWithAlarm(
                            metric=metric, alarm_friendly_name="WorkersNotStarting", add_alarm={PAGE: alarm}
                        )
                    ],
                )
            ],
        )

    def _watch_jobs(self, job_queues: Mapping[str, sqs.IQueue]) -> None:
        """What the services publish about jobs and workers, and every class queue's depth at once."""
        failure_rate = cw.MathExpression(
            expression="IF(f + s >= 5, f / (f + s), 0)",
            using_metrics={"f": _jobs_metric("JobsFailed"), "s": _jobs_metric("JobsSucceeded")},
            label="failed job rate",
            period=Duration.minutes(15),
        )
        description = "Over 20% of recent jobs failed (at least 5 finished). Runbook: docs/operations.md 'Failed jobs'."
        rate_alarm = CustomThreshold(
            threshold=FAILED_RATE_THRESHOLD,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            **self._alarm("FailedJobRate", description),
        )
        depth = [
            m
            for label, q in job_queues.items()
            for m in (
                q.metric_approximate_number_of_messages_visible(label=f"{label} visible"),
                q.metric_approximate_number_of_messages_not_visible(label=f"{label} in flight"),
            )
        ]
        self.facade.monitor_custom(
            alarm_friendly_name="Jobs",
            human_readable_name="Jobs and workers",
            metric_groups=[
                CustomMetricGroup(title="Queue depth (visible / in flight)", metrics=depth),
                CustomMetricGroup(
                    title="Job outcomes",
                    metrics=[_jobs_metric(n) for n in ("JobsSucceeded", "JobsFailed", "JobsCancelled")],
                ),
                CustomMetricGroup(
                    title="Workers (active / started)",
                    metrics=[
                        _workers_metric(kind, pool)
                        for pool in ("gpu", "cpu")
                        for kind in ("ActiveWorkers", "WorkersStarted")
                    ],
                ),
                CustomMetricGroup(
                    title="Failed job rate",
                    metrics=[
                        CustomMetricWithAlarm(
                            metric=failure_rate, alarm_friendly_name="FailedJobRate", add_alarm={PAGE: rate_alarm}
                        )
                    ],
                ),
            ],
        )
