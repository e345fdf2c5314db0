"""Scaling: the scaler function, every minute (and when the intake wakes it), starts Batch
workers for each pool's backlog. Scaling down is the workers' own: they exit when idle."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from batchscribe.settings import ScalerSettings
from stacks.constructs.wiring import Wiring


class Scaling(Construct):
    def __init__(self, scope: Construct, id: str, wiring: Wiring) -> None:
        super().__init__(scope, id)
        compute = wiring.compute
        self.function = wiring.functions.add(
            self,
            "scaler",
            ScalerSettings(pools=[pool.scaler_view() for pool in compute.pools]),
            timeout=Duration.seconds(60),
            memory=256,
            singleton=True,
        )
        compute.grant_depth(self.function)
        for pool in compute.pools:
            pool.job_definition.grant_submit_job(self.function, pool.job_queue)
        # ListJobs has no resource-level permissions (acknowledged in stacks/nag.py)
        self.function.add_to_role_policy(iam.PolicyStatement(actions=["batch:ListJobs"], resources=["*"]))
        events.Rule(
            self,
            "Schedule",
            schedule=events.Schedule.rate(Duration.seconds(wiring.config.timings.scale_every_seconds)),
            targets=[targets.LambdaFunction(self.function)],
            description="Start workers for the queue backlog",
        )
