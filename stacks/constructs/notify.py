"""Notify: the jobs table's stream -> the notify function -> a "Job Status Change" event on
the default bus for every terminal status (and the outcome metrics)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe.resources import DLQ_RETENTION_SECONDS
from batchscribe.settings import NotifySettings
from stacks.constructs.functions import Functions
from stacks.constructs.jobs import Jobs


class Notify(Construct):
    def __init__(self, scope: Construct, id: str, *, functions: Functions, jobs: Jobs) -> None:
        super().__init__(scope, id)
        settings = NotifySettings()
        self.function = functions.add(self, "notify", settings, timeout=Duration.seconds(60), memory=256)
        self.failures = sqs.Queue(
            self,
            "Failures",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.seconds(DLQ_RETENTION_SECONDS),
        )
        self.function.add_event_source(
            sources.DynamoEventSource(
                jobs.table,
                starting_position=lambda_.StartingPosition.LATEST,
                batch_size=100,
                retry_attempts=5,
                bisect_batch_on_error=True,
                on_failure=sources.SqsDlq(self.failures),
                report_batch_item_failures=False,
            )
        )
        events.EventBus.from_event_bus_name(self, "Bus", settings.event_bus_name).grant_put_events_to(self.function)
