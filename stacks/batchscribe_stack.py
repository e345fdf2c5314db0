"""The Batchscribe stack, read as the design's diagram: jobs (table + bucket), compute (the
worker pools: a queue and Batch capacity each), scaling, intake, the API, lifecycle, notify
and monitoring. Each construct wires its own function, grants, event sources and schedules;
the stack only composes them, owns the tags and the checkov acknowledgements, and exports what
clients need."""

from __future__ import annotations

from typing import Any

from aws_cdk import Aspects, CfnOutput, Stack, Tags
from constructs import Construct

from batchscribe.resources import DETAIL_TYPE, EVENT_SOURCE, TABLE_INDEXES
from batchscribe.settings import ClientSettings
from stacks.checkov import CheckovAcknowledgements
from stacks.config import DeploymentConfig
from stacks.constructs.api import Api
from stacks.constructs.compute import Compute
from stacks.constructs.console import Console
from stacks.constructs.functions import Functions
from stacks.constructs.intake import Intake
from stacks.constructs.jobs import Jobs
from stacks.constructs.lifecycle import Lifecycle
from stacks.constructs.monitoring import Monitoring, WatchedQueue
from stacks.constructs.notify import Notify
from stacks.constructs.scaling import Scaling
from stacks.constructs.wiring import Wiring


class BatchscribeStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        Tags.of(self).add("app", "batchscribe")
        Aspects.of(self).add(CheckovAcknowledgements())  # each kept checkov finding, with why (stacks/checkov.py)
        functions = Functions(self, "Functions", config=config)

        self.jobs = Jobs(self, "Jobs", config=config)
        self.console = (
            Console(self, "Console", config=config, access_logs=self.jobs.access_logs) if config.console else None
        )
        if self.console and "*" not in config.cors_origins:  # the console calls the API and the bucket
            config = config.model_copy(update={"cors_origins": [*config.cors_origins, self.console.origin]})
            self.jobs.allow_origin(self.console.origin)
        self.config = config
        self.compute = Compute(self, "Compute", config=config, jobs=self.jobs)
        wiring = Wiring(config=config, functions=functions, jobs=self.jobs, compute=self.compute)
        self.scaling = Scaling(self, "Scaling", wiring)
        self.intake = Intake(self, "Intake", wiring, scaler=self.scaling.function)
        self.api = Api(self, "Api", wiring, scaler=self.scaling.function)
        self.lifecycle = Lifecycle(self, "Lifecycle", wiring)
        routing = self.compute.routing
        self.notify = Notify(
            self, "Notify", functions=functions, jobs=self.jobs, routing=routing, default_model=config.model
        )
        if self.console:
            self.console.connect(self.api.api)
        self.functions = functions.functions
        self._monitor(config)
        self._outputs()

    def _monitor(self, config: DeploymentConfig) -> None:
        """Every queue pair (job queues: with their class's starvation limit; low may wait 4x as
        long), the stream's failure queue, the API, every function and the jobs table."""
        starving = config.starvation_minutes * 60
        job_queues = {
            self._label(p.name, c): WatchedQueue(pair, starving * (4 if c == "low" else 1))
            for p in self.compute.pools
            for c, pair in p.classes.items()
        }
        Monitoring(
            self,
            "Monitoring",
            config=config,
            queues={
                "Uploads": WatchedQueue(self.intake.uploads),
                "Webhooks": WatchedQueue(self.notify.webhooks),
                **job_queues,
            },
            dead_letter_queues={"Notify": self.notify.failures},
            api=self.api.api,
            functions=self.functions,
            table=self.jobs.table,
            indexes=list(TABLE_INDEXES),
            worker_logs=self.compute.log_group,
        )

    def _outputs(self) -> None:
        """What a client or an operator needs from the deployment."""
        CfnOutput(self, "ApiUrl", value=self.api.api.url, description=f"{ClientSettings.env_name('api')} for the CLI")
        CfnOutput(
            self,
            "InvokePolicyArn",
            value=self.api.invoke_policy.managed_policy_arn,
            description="attach to a role, user or group to let it call the API",
        )
        CfnOutput(
            self,
            "StatsPolicyArn",
            value=self.api.stats_policy.managed_policy_arn,
            description="attach to an operator's role, user or group: GET /admin/stats (batchscribe stats)",
        )
        if self.console:
            CfnOutput(self, "ConsoleUrl", value=self.console.url, description="the web console")
            CfnOutput(
                self,
                "ConsoleUserPoolId",
                value=self.console.user_pool.user_pool_id,
                description="add people: aws cognito-idp admin-create-user --user-pool-id … --username EMAIL",
            )
        CfnOutput(self, "BucketName", value=self.jobs.bucket.bucket_name)
        CfnOutput(self, "TableName", value=self.jobs.table.table_name)
        CfnOutput(
            self,
            "WebhookSigningSecretArn",
            value=self.notify.signing_secret.secret_arn,
            description="the secret job callbacks are signed with (aws secretsmanager get-secret-value --secret-id …)",
        )
        CfnOutput(
            self,
            "JobEventPattern",
            value=self.to_json_string({"source": [EVENT_SOURCE], "detail-type": [DETAIL_TYPE]}),
            description="subscribe with an EventBridge rule",
        )

    @staticmethod
    def _label(pool: str, priority: str = "normal") -> str:
        """Alarm and dashboard names per pool and class: the GPU pool's normal queue is 'Jobs', its
        high one 'JobsHigh'; the CPU pool's 'SmallJobs', 'SmallJobsLow', ..."""
        base = {"gpu": "Jobs", "cpu": "SmallJobs"}[pool]
        return base if priority == "normal" else base + priority.capitalize()
