"""Alarms (each with a runbook entry in the README) and one dashboard."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe.settings import METRICS_NAMESPACE
from stacks.config import DeploymentConfig

NAMESPACE = METRICS_NAMESPACE
FAILED_RATE_THRESHOLD = 0.2


def _jobs_metric(name: str) -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": "jobs"},
        statistic="Sum",
        period=Duration.minutes(15),
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        dlqs: Mapping[str, sqs.IQueue],
        job_queues: Mapping[str, tuple[sqs.IQueue, int]],
        api: apigw.RestApi,
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, id)
        # A customer-managed key: CloudWatch cannot use the AWS-managed alias/aws/sns key, so
        # alarms published to a topic encrypted with it are dropped. This key lets CloudWatch
        # encrypt what it publishes, and the topic policy lets CloudWatch (this account's alarms)
        # publish at all: the TLS-only policy CDK writes replaces SNS's default one.
        cloudwatch = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        account = Stack.of(self).account
        self.key = kms.Key(
            self,
            "AlarmsKey",
            description="Batchscribe alarm topic: CloudWatch alarms publish through it",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[cloudwatch],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"aws:SourceAccount": account}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Alarms",
            display_name="Batchscribe alarms",
            enforce_ssl=True,
            master_key=self.key,
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[cloudwatch],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": f"arn:{Stack.of(self).partition}:cloudwatch:*:{account}:alarm:*"},
                },
            )
        )
        if config.alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(config.alarm_email))
        action = cw_actions.SnsAction(self.topic)
        self.alarms: list[cw.Alarm] = []

        def alarm(
            name: str,
            metric: cw.IMetric,
            threshold: float,
            description: str,
            comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        ) -> None:
            a = cw.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=comparison,
                alarm_description=description,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            )
            a.add_alarm_action(action)
            self.alarms.append(a)

        for name, dlq in dlqs.items():
            alarm(
                f"{name}DeadLetters",
                dlq.metric_approximate_number_of_messages_visible(period=Duration.minutes(5), statistic="Maximum"),
                0,
                f"Messages in the {name} dead-letter queue. Runbook: README 'DLQ redrive'.",
            )
        # per priority class: the age of its oldest message, alarmed past the class's threshold
        # (a low job waiting long under load is the design; a normal one is starvation)
        for name, (queue, threshold) in job_queues.items():
            alarm(
                f"{name}Starvation",
                queue.metric_approximate_age_of_oldest_message(period=Duration.minutes(5), statistic="Maximum"),
                threshold,
                f"A {name} job waited over {threshold // 60} min: no worker is taking work, or higher classes "
                "take it all. Runbook: README 'Starvation'.",
            )
        failed, succeeded = _jobs_metric("JobsFailed"), _jobs_metric("JobsSucceeded")
        self.failure_rate = cw.MathExpression(
            expression="IF(f + s >= 5, f / (f + s), 0)",
            using_metrics={"f": failed, "s": succeeded},
            label="failed job rate",
            period=Duration.minutes(15),
        )
        alarm(
            "FailedJobRate",
            self.failure_rate,
            FAILED_RATE_THRESHOLD,
            "Over 20% of recent jobs failed (at least 5 finished). Runbook: README 'Failed jobs'.",
        )
        alarm(
            "Api5xx",
            api.metric_server_error(period=Duration.minutes(5), statistic="Sum"),
            0,
            "The API answered 5xx. Runbook: README 'API errors'.",
        )
        for name, fn in functions.items():
            alarm(
                f"{name}Errors",
                fn.metric_errors(period=Duration.minutes(5), statistic="Sum"),
                0,
                f"The {name} function raised. Runbook: README 'Lambda errors'.",
            )

        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{config.stack_name}-jobs")
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue depth (visible / in flight)",
                width=12,
                left=[
                    m
                    for q, _ in job_queues.values()
                    for m in (
                        q.metric_approximate_number_of_messages_visible(),
                        q.metric_approximate_number_of_messages_not_visible(),
                    )
                ],
            ),
            cw.GraphWidget(
                title="Oldest queued job (s)",
                width=12,
                left=[q.metric_approximate_age_of_oldest_message(label=n) for n, (q, _) in job_queues.items()],
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Job outcomes",
                width=12,
                left=[_jobs_metric(n) for n in ("JobsSucceeded", "JobsFailed", "JobsCancelled")],
            ),
            cw.GraphWidget(
                title="Workers (active / started)",
                width=12,
                left=[
                    cw.Metric(
                        namespace=NAMESPACE,
                        metric_name=f"{kind}_{pool}",
                        dimensions_map={"service": "scaler"},
                        statistic="Maximum",
                        period=Duration.minutes(1),
                    )
                    for pool in ("gpu", "cpu")
                    for kind in ("ActiveWorkers", "WorkersStarted")
                ],
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="API latency p50 / p90 / p99 (ms)",
                width=12,
                left=[api.metric_latency(statistic=s, period=Duration.minutes(5)) for s in ("p50", "p90", "p99")],
            ),
            cw.GraphWidget(
                title="Failed job rate / dead letters",
                width=12,
                left=[self.failure_rate],
                right=[d.metric_approximate_number_of_messages_visible() for d in dlqs.values()],
            ),
        )
