"""Scaling: the scaler function, every minute (and when the intake wakes it), starts Batch
workers for each pool's backlog. Scaling down is the workers' own: they exit when idle."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from batchscribe.resources import SCALER_LEASE, lease_item_id
from batchscribe.settings import ScalerSettings
from stacks.constructs.wiring import Wiring


class Scaling(Construct):
    def __init__(self, scope: Construct, id: str, wiring: Wiring) -> None:
        super().__init__(scope, id)
        compute = wiring.compute
        self.function = wiring.functions.add(
            self,
            "scaler",
            ScalerSettings(
                pools=[pool.scaler_view() for pool in compute.pools],
                lease_table=wiring.jobs.table.table_name,
                spot_fallback_seconds=wiring.config.spot_fallback_minutes * 60,
            ),
            timeout=Duration.seconds(60),
            memory=256,
            singleton=True,
        )
        compute.grant_depth(self.function)
        for pool in compute.pools:
            for queue in pool.job_queues:
                pool.job_definition.grant_submit_job(self.function, queue)
        # one run at a time: the lease item in the jobs table, and no other item of it
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:UpdateItem"],
                resources=[wiring.jobs.table.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [lease_item_id(SCALER_LEASE)]}},
            )
        )
        # ListJobs and DescribeJobs have no resource-level permissions (acknowledged in stacks/nag.py)
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["batch:ListJobs", "batch:DescribeJobs"], resources=["*"])
        )
        # workers stuck RUNNABLE on Spot are cancelled (and started again on the on-demand queue)
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["batch:CancelJob"],
                resources=[Stack.of(self).format_arn(service="batch", resource="job", resource_name="*")],
            )
        )
        events.Rule(
            self,
            "Schedule",
            schedule=events.Schedule.rate(Duration.seconds(wiring.config.timings.scale_every_seconds)),
            targets=[targets.LambdaFunction(self.function)],
            description="Start workers for the queue backlog",
        )
