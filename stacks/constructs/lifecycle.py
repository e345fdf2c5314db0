"""Lifecycle: what closes jobs nothing else would. dead_letter (a job message used up its
receives), the sweeper on a schedule (expired upload windows, lost leases) and the
reconciler on Batch job state changes (a worker ended while it held jobs)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from batchscribe.settings import LifecycleSettings
from stacks.config import DeploymentConfig
from stacks.constructs.compute import Compute
from stacks.constructs.functions import Functions
from stacks.constructs.jobs import READ_TRANSITION, READ_TRANSITION_QUERY, Jobs


class Lifecycle(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        functions: Functions,
        jobs: Jobs,
        compute: Compute,
    ) -> None:
        super().__init__(scope, id)
        t = config.timings
        settings = LifecycleSettings(
            **jobs.store,
            **compute.routing.model_dump(),
            max_attempts=config.max_attempts,
            queued_redrive_seconds=t.queued_redrive_seconds,
        )

        self.dead_letter = functions.add(
            self, "dead_letter", settings, timeout=Duration.seconds(t.dead_letter_timeout_seconds), memory=256
        )
        jobs.grant_table(self.dead_letter, READ_TRANSITION)
        compute.grant_send(self.dead_letter)  # a job with attempts left gets its message again
        for pool in compute.pools:
            for pair in pool.classes.values():  # every class's DLQ: the redrive goes back to the job's class
                self.dead_letter.add_event_source(
                    sources.SqsEventSource(pair.dlq, batch_size=10, report_batch_item_failures=True)
                )

        self.sweeper = functions.add(self, "sweeper", settings, timeout=Duration.minutes(5), memory=256, singleton=True)
        events.Rule(
            self,
            "SweeperSchedule",
            schedule=events.Schedule.rate(Duration.seconds(t.sweep_every_seconds)),
            targets=[targets.LambdaFunction(self.sweeper)],
            description="Fail expired uploads, requeue lost leases, re-send lost queued messages",
        )

        self.reconciler = functions.add(self, "reconciler", settings, timeout=Duration.seconds(60), memory=256)
        events.Rule(
            self,
            "WorkerExited",
            description="A Batchscribe worker ended: requeue what it still held",
            event_pattern=events.EventPattern(
                source=["aws.batch"],
                detail_type=["Batch Job State Change"],
                detail={
                    "status": ["SUCCEEDED", "FAILED"],
                    "jobQueue": [p.job_queue.job_queue_arn for p in compute.pools],
                },
            ),
            targets=[targets.LambdaFunction(self.reconciler)],
        )
        for fn in (self.sweeper, self.reconciler):
            jobs.grant_table(fn, READ_TRANSITION_QUERY)
            compute.grant_send(fn)
