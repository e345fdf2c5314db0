"""Lifecycle: what closes jobs nothing else would. dead_letter (a job message used up its
receives), the sweeper on a schedule (expired upload windows, lost leases) and the
reconciler on Batch job state changes (a worker ended while it held jobs)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from batchscribe.settings import LifecycleSettings
from stacks.constructs.jobs import READ_TRANSITION, READ_TRANSITION_QUERY
from stacks.constructs.wiring import Wiring


class Lifecycle(Construct):
    def __init__(self, scope: Construct, id: str, wiring: Wiring) -> None:
        super().__init__(scope, id)
        config, compute = wiring.config, wiring.compute
        self.wiring = wiring
        self.settings = LifecycleSettings(
            **wiring.jobs.store,
            **compute.routing.model_dump(),
            max_attempts=config.max_attempts,
            queued_redrive_seconds=config.timings.queued_redrive_seconds,
        )
        self.dead_letter = self._dead_letter()
        self.sweeper = self._function("sweeper", timeout=Duration.minutes(5), singleton=True)
        events.Rule(
            self,
            "SweeperSchedule",
            schedule=events.Schedule.rate(Duration.seconds(config.timings.sweep_every_seconds)),
            targets=[targets.LambdaFunction(self.sweeper)],
            description="Fail expired uploads, requeue lost leases, re-send lost queued messages",
        )
        self.reconciler = self._function("reconciler", timeout=Duration.seconds(60))
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

    def _function(
        self,
        process: str,
        *,
        timeout: Duration,
        singleton: bool = False,
        actions: tuple[str, ...] = READ_TRANSITION_QUERY,
    ) -> lambda_.Function:
        """A lifecycle function: it reads and moves jobs (`actions` on the table) and sends job
        messages (a job with attempts left gets its message again)."""
        fn = self.wiring.functions.add(self, process, self.settings, timeout=timeout, memory=256, singleton=singleton)
        self.wiring.jobs.grant_table(fn, actions)
        self.wiring.compute.grant_send(fn)
        return fn

    def _dead_letter(self) -> lambda_.Function:
        """dead_letter drains every class's DLQ: the redrive goes back to the job's class."""
        fn = self._function(
            "dead_letter",
            timeout=Duration.seconds(self.wiring.config.timings.dead_letter_timeout_seconds),
            actions=READ_TRANSITION,
        )
        for pool in self.wiring.compute.pools:
            for pair in pool.classes.values():
                fn.add_event_source(sources.SqsEventSource(pair.dlq, batch_size=10, report_batch_item_failures=True))
        return fn
