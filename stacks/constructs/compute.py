"""Compute: the worker pools. Each pool is a jobs queue (SQS, with its DLQ) and the AWS
Batch capacity that drains it: GPU workers (Spot first, on-demand fallback) and a CPU pool
for small jobs, both scaling from zero. Public subnets and free gateway endpoints, no NAT
gateway: an idle deployment costs nothing for compute or networking."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from batchscribe.models import DEFAULT_PRIORITY, PRIORITIES, Priority
from batchscribe.resources import (
    CUDA_CACHE_HOST_DIR,
    CUDA_CACHE_MOUNT,
    JOBS_MAX_RECEIVE_COUNT,
    WORKER_CANNOT_START,
    cuda_cache_env,
)
from batchscribe.settings import Pool, RoutingSettings, WorkerSettings
from stacks.config import DeploymentConfig
from stacks.constructs.functions import ROOT
from stacks.constructs.jobs import Jobs
from stacks.constructs.logs import log_group
from stacks.constructs.queues import QueuePair
from stacks.instances import job_size, pool_hourly_usd, workers_per_host
from stacks.sizing import WorkerNeeds, held_jobs

IMDS_ADDRESS = "169.254.169.254"
WORKER_UID = 10001  # the image's USER (gpu_container/Dockerfile; a test holds the two equal)


@dataclass
class WorkerPool:
    name: str
    messages: QueuePair  # the `normal` class's queue (the pool's main queue)
    classes: dict[Priority, QueuePair]  # every class's queue pair, highest first
    job_queue: batch.JobQueue
    on_demand_queue: batch.JobQueue | None  # where the scaler moves workers stuck on Spot; None: no Spot
    job_definition: batch.EcsJobDefinition
    role: iam.Role
    max_workers: int
    jobs_per_worker: int
    held_jobs: int  # K: the jobs one worker holds (the scaler counts a running worker's free slots)

    @property
    def queue(self) -> sqs.IQueue:
        return self.messages.queue

    @property
    def dlq(self) -> sqs.IQueue:
        return self.messages.dlq

    @property
    def class_queue_urls(self) -> dict[Priority, str]:
        """The other classes' queue URLs (settings' `class_queue_urls`)."""
        return {p: pair.queue.queue_url for p, pair in self.classes.items() if p != DEFAULT_PRIORITY}

    def scaler_view(self) -> Pool:
        return Pool(
            name=self.name,
            queue_url=self.queue.queue_url,
            class_queue_urls=self.class_queue_urls,
            max_workers=self.max_workers,
            jobs_per_worker=self.jobs_per_worker,
            held_jobs=self.held_jobs,
            job_queue=self.job_queue.job_queue_arn,
            job_definition=self.job_definition.job_definition_arn,
            on_demand_job_queue=self.on_demand_queue.job_queue_arn if self.on_demand_queue else "",
        )

    @property
    def job_queues(self) -> list[batch.JobQueue]:
        """Every Batch queue the scaler may submit the pool's workers to."""
        return [self.job_queue, *([self.on_demand_queue] if self.on_demand_queue else [])]


@dataclass(frozen=True)
class PoolSpec:
    """What one pool is made of, from the deployment's config: the one place GPU and CPU differ."""

    name: str  # "Gpu" or "Cpu": the prefix of the pool's resources
    instance_types: list[str]
    max_vcpus: int
    gpus: int  # per worker
    model: str  # baked into the pool's image
    engine: str  # the pool's engine, baked into its image with the model
    max_workers: int
    hourly_usd: float | None  # the configured price per worker-hour; None: from the price table
    needs: WorkerNeeds  # what one worker takes of its host (memory, disk)

    @classmethod
    def of(cls, config: DeploymentConfig, *, gpu: bool) -> PoolSpec:
        device, model = ("gpu", config.model) if gpu else ("cpu", config.cpu_model)
        engine = config.engine if gpu else config.cpu_engine
        held = (config.gpu_held_jobs if gpu else config.cpu_held_jobs) or held_jobs(device, model)
        return cls(
            name="Gpu" if gpu else "Cpu",
            instance_types=config.gpu_instance_types if gpu else config.cpu_instance_types,
            max_vcpus=config.max_gpu_vcpus if gpu else config.max_cpu_vcpus,
            gpus=1 if gpu else 0,
            model=model,
            engine=engine,
            max_workers=config.max_gpu_workers if gpu else config.max_cpu_workers,
            hourly_usd=config.gpu_hourly_usd if gpu else config.cpu_hourly_usd,
            needs=WorkerNeeds(engine=engine, model=model, device=device, held_jobs=held),
        )

    @property
    def device(self) -> str:
        return "gpu" if self.gpus else "cpu"

    @property
    def image_type(self) -> batch.EcsMachineImageType:
        """Amazon Linux 2023 ECS AMIs (the NVIDIA one carries the current driver branch)."""
        return batch.EcsMachineImageType.ECS_AL2023_NVIDIA if self.gpus else batch.EcsMachineImageType.ECS_AL2023


class Network(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=3,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="workers", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=22)
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        flow_logs = log_group(self, "FlowLogs", 30)
        self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "Workers",
            vpc=self.vpc,
            allow_all_outbound=True,
            description="Batchscribe workers: no inbound traffic at all",
        )


class Compute(Construct):
    def __init__(self, scope: Construct, id: str, *, config: DeploymentConfig, jobs: Jobs) -> None:
        super().__init__(scope, id)
        self.config = config
        self.jobs = jobs
        self.network = Network(self, "Network")
        self.log_group = log_group(self, "WorkerLogs", config.log_retention_days)
        self.gpu = self._pool(PoolSpec.of(config, gpu=True))
        self.cpu = self._pool(PoolSpec.of(config, gpu=False)) if config.cpu_pool else None

    @property
    def pools(self) -> list[WorkerPool]:
        return [p for p in (self.gpu, self.cpu) if p is not None]

    @property
    def routing(self) -> RoutingSettings:
        """Which queue a job's message goes to (the intake's and the lifecycle's settings)."""
        return RoutingSettings(
            jobs_queue_url=self.gpu.queue.queue_url,
            class_queue_urls=self.gpu.class_queue_urls,
            small_jobs_queue_url=self.cpu.queue.queue_url if self.cpu else None,
            small_class_queue_urls=self.cpu.class_queue_urls if self.cpu else {},
            small_job_max_bytes=self.config.small_job_max_mb * 1024 * 1024 if self.cpu else 0,
            small_job_model=self.config.cpu_model if self.cpu else None,
        )

    def grant_send(self, grantee: iam.IGrantable) -> None:
        """Send job messages to every pool's class queues (intake, requeues)."""
        for pool in self.pools:
            for pair in pool.classes.values():
                pair.queue.grant_send_messages(grantee)

    def grant_depth(self, grantee: iam.IGrantable) -> None:
        """Read every class queue's depth (the scaler; the API's queue positions)."""
        for pool in self.pools:
            for pair in pool.classes.values():
                pair.queue.grant(grantee, "sqs:GetQueueAttributes")

    def _pool(self, spec: PoolSpec) -> WorkerPool:
        """A pool: its class queues, Spot-then-on-demand capacity, its image and job definition,
        and a role that consumes its queues and works on jobs."""
        classes = self._class_queues(spec.name)
        role = iam.Role(
            self,
            f"{spec.name}JobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"Batchscribe {spec.name} worker",
        )
        job_queue, on_demand_queue = self._job_queues(spec)
        pool = WorkerPool(
            name=spec.name.lower(),
            messages=classes[DEFAULT_PRIORITY],
            classes=classes,
            job_queue=job_queue,
            on_demand_queue=on_demand_queue,
            job_definition=self._job_definition(spec, role, classes),
            role=role,
            max_workers=spec.max_workers,
            jobs_per_worker=self.config.jobs_per_worker,
            held_jobs=spec.needs.held_jobs,
        )
        for pair in classes.values():
            pair.queue.grant_consume_messages(role)
            # a job over its owner's running cap goes back on its queue as a fresh message
            # (ClassQueues.send_later), so that waiting does not count towards the DLQ
            pair.queue.grant_send_messages(role)
        self.jobs.grant_worker(role)
        return pool

    def _class_queues(self, name: str) -> dict[Priority, QueuePair]:
        """One queue (+ DLQ) per priority class; `normal` keeps the pool's original queue."""
        t = self.config.timings
        return {
            p: QueuePair(
                self,
                f"{name}Messages" if p == DEFAULT_PRIORITY else f"{name}{p.capitalize()}Messages",
                visibility=t.visibility_seconds,
                max_receive=JOBS_MAX_RECEIVE_COUNT,
                dlq_visibility=t.dlq_visibility_seconds,
            )
            for p in PRIORITIES
        }

    def _launch_template(self, spec: PoolSpec) -> ec2.LaunchTemplate:
        """A pool's hosts: a root volume for what its workers hold (or the configured size), and
        no way from a worker to the instance role: IMDSv2 only, one network hop (a container in
        bridge mode is a hop away), and the worker's user refused IMDS outright (Batch runs EC2
        jobs in the host's network namespace, where the hop limit does not reach)."""
        workers = workers_per_host(spec.instance_types, spec.gpus)  # one per GPU: they share the volume
        size = self.config.root_volume_gib or spec.needs.volume_gib(self.config.max_upload_mb, workers)
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            f"iptables --insert OUTPUT --destination {IMDS_ADDRESS} --match owner --uid-owner {WORKER_UID} "
            "--jump REJECT"
        )
        if spec.gpus:  # the driver's JIT cache, kept on the host for every worker it runs (_jit_cache)
            user_data.add_commands(f"install -d -m 0700 -o {WORKER_UID} -g {WORKER_UID} {CUDA_CACHE_HOST_DIR}")
        multipart = ec2.MultipartUserData()  # Batch merges launch template user data in MIME form only
        multipart.add_user_data_part(user_data, ec2.MultipartBody.SHELL_SCRIPT, True)
        return ec2.LaunchTemplate(
            self,
            f"{spec.name}LaunchTemplate",
            require_imdsv2=True,
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            http_put_response_hop_limit=1,
            user_data=multipart,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(size, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3),
                )
            ],
        )

    def _job_queues(self, spec: PoolSpec) -> tuple[batch.JobQueue, batch.JobQueue | None]:
        """The pool's queue: Spot first, on-demand as Batch's fallback (or on-demand only); and,
        with Spot, an on-demand-only queue on the same on-demand environment, where the scaler
        moves workers stuck RUNNABLE on the first (Batch fails over only when Spot "cannot
        provide a suitable resource", not when there is no Spot quota or capacity)."""
        template = self._launch_template(spec)
        on_demand = self._environment(spec, "OnDemand", False, template)
        if not self.config.spot:
            return self._queue(spec.name, [on_demand]), None
        spot = self._environment(spec, "Spot", True, template)
        return self._queue(spec.name, [spot, on_demand]), self._queue(f"{spec.name}OnDemand", [on_demand])

    def _queue(self, name: str, environments: list[batch.ManagedEc2EcsComputeEnvironment]) -> batch.JobQueue:
        """A job queue over `environments` in order; workers stuck RUNNABLE past
        `runnable_timeout_minutes` are cancelled."""
        stuck = Duration.minutes(self.config.runnable_timeout_minutes)
        return batch.JobQueue(
            self,
            f"{name}Queue",
            compute_environments=[
                batch.OrderedComputeEnvironment(compute_environment=env, order=i)
                for i, env in enumerate(environments, start=1)
            ],
            job_state_time_limit_actions=[
                batch.JobStateTimeLimitAction(max_time=stuck, reason=reason)
                for reason in (
                    batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY,
                    batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
                    batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
                )
            ],
        )

    def _environment(
        self, spec: PoolSpec, kind: str, spot: bool, template: ec2.LaunchTemplate
    ) -> batch.ManagedEc2EcsComputeEnvironment:
        return batch.ManagedEc2EcsComputeEnvironment(
            self,
            f"{spec.name}{kind}",
            vpc=self.network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[self.network.security_group],
            launch_template=template,
            minv_cpus=0,
            maxv_cpus=spec.max_vcpus,
            spot=spot,
            allocation_strategy=(
                batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED
                if spot
                else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE
            ),
            use_optimal_instance_classes=False,
            instance_types=[ec2.InstanceType(t) for t in spec.instance_types],
            images=[batch.EcsMachineImage(image_type=spec.image_type)],
            update_to_latest_image_version=True,
        )

    def _job_definition(
        self, spec: PoolSpec, role: iam.Role, classes: dict[Priority, QueuePair]
    ) -> batch.EcsJobDefinition:
        """One worker: the pool's image, sized to fit every instance type of the pool with room for
        what the worker needs, retried when Spot takes its host back and never otherwise (a worker
        that cannot start, WORKER_CANNOT_START, says so by its exit code, which Batch records on
        the job: a retry on the same host would only fail again), stopped at
        `batch_job_timeout_minutes`."""
        image = ecr_assets.DockerImageAsset(
            self,
            f"{spec.name}Image",
            directory=str(ROOT),
            file="gpu_container/Dockerfile",
            build_args={"DEVICE": spec.device, "ENGINE": spec.engine, "MODEL": spec.model},
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        size = job_size(spec.instance_types, spec.gpus, spec.needs.memory_mib)
        jit_env, jit_volumes = self._jit_cache(spec)
        container = batch.EcsEc2ContainerDefinition(
            self,
            f"{spec.name}Container",
            image=ecs.ContainerImage.from_docker_image_asset(image),
            cpu=size.vcpus,
            memory=Size.mebibytes(size.memory_mib),
            gpu=size.gpus or None,
            job_role=role,
            environment={
                **self._worker_settings(spec, classes).to_env(),
                **jit_env,
                "AWS_REGION": Stack.of(self).region,
            },
            volumes=jit_volumes,
            logging=ecs.LogDriver.aws_logs(stream_prefix=spec.name.lower(), log_group=self.log_group),
            readonly_root_filesystem=False,
        )
        return batch.EcsJobDefinition(
            self,
            f"{spec.name}JobDefinition",
            container=container,
            timeout=Duration.minutes(self.config.batch_job_timeout_minutes),
            retry_attempts=3,
            retry_strategies=[
                batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
                # said outright, though the last entry covers them too (Batch takes at most 5)
                *(
                    batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_exit_code=str(int(code))))
                    for code in WORKER_CANNOT_START
                ),
                batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
            ],
            propagate_tags=True,
        )

    @staticmethod
    def _jit_cache(spec: PoolSpec) -> tuple[dict[str, str], list[batch.EcsVolume]]:
        """A GPU worker's JIT cache on the instance's disk: kernels the driver compiles from the
        engine's PTX (an H100 runs CTranslate2 4.8.5 only so) are compiled once per host, not
        once per worker container. The host folder is made for the worker's user at boot
        (_launch_template); the worker says where its cache is when its preflight passes."""
        if not spec.gpus:
            return {}, []
        volume = batch.EcsVolume.host(
            name="cuda-jit-cache", host_path=CUDA_CACHE_HOST_DIR, container_path=CUDA_CACHE_MOUNT, readonly=False
        )
        return cuda_cache_env(CUDA_CACHE_MOUNT), [volume]

    def _worker_settings(self, spec: PoolSpec, classes: dict[Priority, QueuePair]) -> WorkerSettings:
        """The worker program's settings: its queues, model, limits, timings and price."""
        config = self.config
        hourly = spec.hourly_usd if spec.hourly_usd is not None else pool_hourly_usd(spec.instance_types, config.spot)
        return WorkerSettings(
            **self.jobs.store,
            jobs_queue_url=classes[DEFAULT_PRIORITY].queue.queue_url,
            class_queue_urls={p: c.queue.queue_url for p, c in classes.items() if p != DEFAULT_PRIORITY},
            model=spec.model,
            engine=spec.engine,
            device="cuda" if spec.gpus else "cpu",
            max_duration_seconds=config.max_duration_minutes * 60,
            max_held_jobs=spec.needs.held_jobs,  # the K the volume and the memory are sized for
            max_running_per_owner=config.max_running_per_owner,
            max_attempts=config.max_attempts,
            timings=config.timings,
            instance_hourly_usd=hourly,
        )
