"""The Batchscribe stack: a thin composition of one construct per concern. It owns the
tags, the wiring between constructs (environment, grants, event sources, schedules) and
the cdk-nag acknowledgements (stacks/nag.py)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, Stack, Tags
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe.events import DETAIL_TYPE, EVENT_SOURCE
from batchscribe.keys import OUTPUTS_PREFIX, UPLOADS_PREFIX
from stacks.config import DeploymentConfig
from stacks.constructs.api import Api
from stacks.constructs.compute import Compute, Network
from stacks.constructs.functions import Functions
from stacks.constructs.monitoring import Monitoring
from stacks.constructs.queues import Queues
from stacks.constructs.storage import Storage
from stacks.constructs.table import JobsTable

TABLE_ACTIONS_API = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query")
TABLE_ACTIONS_STATE = ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query")


class BatchscribeStack(Stack):
    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        Tags.of(self).add("app", "batchscribe")
        self.config = config
        cpu_pool = config.small_job_max_mb > 0 and config.max_cpu_workers > 0

        self.queues = Queues(self, "Queues", cpu_pool=cpu_pool)
        self.storage = Storage(self, "Storage", config=config, uploads_queue=self.queues.uploads.queue)
        self.table = JobsTable(self, "Table").table
        bucket = self.storage.bucket
        jobs_queue = self.queues.jobs.queue
        small_queue = self.queues.small_jobs.queue if self.queues.small_jobs else None

        env = {
            "BATCHSCRIBE_TABLE_NAME": self.table.table_name,
            "BATCHSCRIBE_BUCKET_NAME": bucket.bucket_name,
            "BATCHSCRIBE_JOBS_QUEUE_URL": jobs_queue.queue_url,
            "BATCHSCRIBE_MAX_UPLOAD_BYTES": str(config.max_upload_mb * 1024 * 1024),
            "BATCHSCRIBE_UPLOAD_WINDOW_SECONDS": str(config.upload_window_minutes * 60),
            "BATCHSCRIBE_JOB_RETENTION_DAYS": str(config.output_retention_days),
        }
        if small_queue is not None:
            env["BATCHSCRIBE_SMALL_JOBS_QUEUE_URL"] = small_queue.queue_url
            env["BATCHSCRIBE_SMALL_JOB_MAX_BYTES"] = str(config.small_job_max_mb * 1024 * 1024)

        # ---- compute --------------------------------------------------------------------
        network = Network(self, "Network")
        self.compute = Compute(
            self,
            "Compute",
            config=config,
            network=network,
            environment={k: v for k, v in env.items() if k in ("BATCHSCRIBE_TABLE_NAME", "BATCHSCRIBE_BUCKET_NAME")},
            gpu_queue=jobs_queue,
            cpu_queue=small_queue,
        )
        for pool in self.compute.pools:
            self._grant_table(pool.role, TABLE_ACTIONS_STATE)
            bucket.grant_read(pool.role, f"{UPLOADS_PREFIX}*")
            bucket.grant_read_write(pool.role, f"{OUTPUTS_PREFIX}*")
            bucket.grant_delete(pool.role, f"{OUTPUTS_PREFIX}*")

        # ---- functions -------------------------------------------------------------------
        self.functions = Functions(self, "Functions", config=config, environment=env)
        fns = self.functions
        pool_specs = [
            {
                "name": pool.name,
                "queue_url": pool.queue.queue_url,
                "max_workers": config.max_gpu_workers if pool.name == "gpu" else config.max_cpu_workers,
                "jobs_per_worker": config.jobs_per_worker,
                "job_queue": pool.job_queue.job_queue_arn,
                "job_definition": pool.job_definition.job_definition_arn,
            }
            for pool in self.compute.pools
        ]
        scaler = fns.add(
            "Scaler",
            timeout=Duration.seconds(60),
            memory=256,
            reserved_concurrency=1,
            environment={
                "BATCHSCRIBE_POOLS": self.to_json_string(pool_specs),
                "BATCHSCRIBE_WORKER_NAME_PREFIX": "batchscribe-worker",
            },
        )
        api_fn = fns.add("Api", memory=512)
        on_upload = fns.add(
            "OnUpload",
            timeout=Duration.seconds(60),
            memory=512,
            environment={"BATCHSCRIBE_SCALER_FUNCTION_NAME": scaler.function_name},
        )
        dead_letter = fns.add("DeadLetter", timeout=Duration.seconds(60), memory=256)
        sweeper = fns.add("Sweeper", timeout=Duration.minutes(5), memory=256, reserved_concurrency=1)
        reconciler = fns.add("Reconciler", timeout=Duration.seconds(60), memory=256)
        notify = fns.add("Notify", timeout=Duration.seconds(60), memory=256)

        # least privilege, each through grant_*
        self._grant_table(api_fn, TABLE_ACTIONS_API)
        bucket.grant_put(api_fn, f"{UPLOADS_PREFIX}*")  # signs presigned POSTs
        bucket.grant_read(api_fn, f"{OUTPUTS_PREFIX}*")  # signs presigned result GETs

        self._grant_table(on_upload, ("dynamodb:GetItem", "dynamodb:UpdateItem"))
        bucket.grant_read(on_upload, f"{UPLOADS_PREFIX}*")  # HeadObject
        bucket.grant_delete(on_upload, f"{UPLOADS_PREFIX}*")  # rejected uploads
        scaler.grant_invoke(on_upload)
        on_upload.add_event_source(
            sources.SqsEventSource(self.queues.uploads.queue, batch_size=10, report_batch_item_failures=True)
        )

        self._grant_table(dead_letter, ("dynamodb:GetItem", "dynamodb:UpdateItem"))
        for pair in self.queues.job_pairs:
            dead_letter.add_event_source(
                sources.SqsEventSource(pair.dlq, batch_size=10, report_batch_item_failures=True)
            )

        self._grant_table(sweeper, TABLE_ACTIONS_STATE)
        self._grant_table(reconciler, TABLE_ACTIONS_STATE)
        for fn in (on_upload, sweeper, reconciler):
            for pair in self.queues.job_pairs:
                pair.queue.grant_send_messages(fn)

        for pair in self.queues.job_pairs:
            pair.queue.grant(scaler, "sqs:GetQueueAttributes")
        for pool in self.compute.pools:
            pool.job_definition.grant_submit_job(scaler, pool.job_queue)
        scaler.add_to_role_policy(iam.PolicyStatement(actions=["batch:ListJobs"], resources=["*"]))

        stream_dlq = sqs.Queue(
            self,
            "NotifyFailures",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        notify.add_event_source(
            sources.DynamoEventSource(
                self.table,
                starting_position=lambda_.StartingPosition.LATEST,
                batch_size=100,
                retry_attempts=5,
                bisect_batch_on_error=True,
                on_failure=sources.SqsDlq(stream_dlq),
                report_batch_item_failures=False,
            )
        )
        events.EventBus.from_event_bus_name(self, "DefaultBus", "default").grant_put_events_to(notify)

        # ---- schedules and events --------------------------------------------------------
        every_minute = events.Schedule.rate(Duration.minutes(1))
        events.Rule(
            self,
            "ScalerSchedule",
            schedule=every_minute,
            targets=[targets.LambdaFunction(scaler)],
            description="Start workers for the queue backlog",
        )
        events.Rule(
            self,
            "SweeperSchedule",
            schedule=every_minute,
            targets=[targets.LambdaFunction(sweeper)],
            description="Fail expired uploads, requeue lost leases",
        )
        events.Rule(
            self,
            "WorkerExited",
            description="A Batchscribe worker ended: requeue what it still held",
            event_pattern=events.EventPattern(
                source=["aws.batch"],
                detail_type=["Batch Job State Change"],
                detail={
                    "status": ["SUCCEEDED", "FAILED"],
                    "jobQueue": [p.job_queue.job_queue_arn for p in self.compute.pools],
                },
            ),
            targets=[targets.LambdaFunction(reconciler)],
        )

        # ---- API and monitoring ------------------------------------------------------------
        self.api = Api(self, "Api", config=config, handler=api_fn).api
        dlqs = {
            "Uploads": self.queues.uploads.dlq,
            "Notify": stream_dlq,
            **{("Jobs" if p is self.queues.jobs else "SmallJobs"): p.dlq for p in self.queues.job_pairs},
        }
        Monitoring(
            self,
            "Monitoring",
            config=config,
            dlqs=dlqs,
            job_queues={("Jobs" if p is self.queues.jobs else "SmallJobs"): p.queue for p in self.queues.job_pairs},
            api=self.api,
            functions=dict(fns.functions),
        )

        CfnOutput(self, "ApiUrl", value=self.api.url, description="BATCHSCRIBE_API for the CLI")
        CfnOutput(self, "BucketName", value=bucket.bucket_name)
        CfnOutput(self, "TableName", value=self.table.table_name)
        CfnOutput(
            self,
            "JobEventPattern",
            value=self.to_json_string({"source": [EVENT_SOURCE], "detail-type": [DETAIL_TYPE]}),
            description="subscribe with an EventBridge rule",
        )

    def _grant_table(self, grantee: iam.IGrantable, actions: tuple[str, ...]) -> None:
        self.table.grant(grantee, *actions)
