"""AWS Batch: GPU workers (Spot first, on-demand fallback) and a CPU pool for small jobs,
scaling from zero. Public subnets and free gateway endpoints, no NAT gateway: an idle
deployment costs nothing for compute or networking."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.config import DeploymentConfig
from stacks.constructs.functions import ROOT, retention


@dataclass
class WorkerPool:
    name: str
    job_queue: batch.JobQueue
    job_definition: batch.EcsJobDefinition
    role: iam.Role
    queue: sqs.IQueue


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
        flow_logs = logs.LogGroup(
            self, "FlowLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
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
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        environment: dict[str, str],
        gpu_queue: sqs.IQueue,
        cpu_queue: sqs.IQueue | None,
    ) -> None:
        super().__init__(scope, id)
        self.config = config
        self.network = network
        self.environment = environment
        self.log_group = logs.LogGroup(
            self, "WorkerLogs", retention=retention(config.log_retention_days), removal_policy=RemovalPolicy.DESTROY
        )
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            require_imdsv2=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        config.root_volume_gib, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
                    ),
                )
            ],
        )
        self.gpu = self._pool(
            "Gpu",
            instance_types=config.gpu_instance_types,
            max_vcpus=config.max_gpu_vcpus,
            image_type=batch.EcsMachineImageType.ECS_AL2_NVIDIA,
            image=ecr_assets.DockerImageAsset(
                self,
                "GpuImage",
                directory=str(ROOT),
                file="gpu_container/Dockerfile",
                build_args={"MODEL": config.model, "ENGINE": config.engine},
                platform=ecr_assets.Platform.LINUX_AMD64,
            ),
            gpus=1,
            model=config.model,
            queue=gpu_queue,
        )
        self.cpu = (
            self._pool(
                "Cpu",
                instance_types=config.cpu_instance_types,
                max_vcpus=config.max_cpu_vcpus,
                image_type=batch.EcsMachineImageType.ECS_AL2,
                image=ecr_assets.DockerImageAsset(
                    self,
                    "CpuImage",
                    directory=str(ROOT),
                    file="gpu_container/Dockerfile",
                    build_args={
                        "MODEL": config.cpu_model,
                        "ENGINE": config.engine,
                        "BASE": "python:3.12-slim-bookworm",
                    },
                    platform=ecr_assets.Platform.LINUX_AMD64,
                ),
                gpus=0,
                model=config.cpu_model,
                queue=cpu_queue,
            )
            if cpu_queue is not None
            else None
        )

    @property
    def pools(self) -> list[WorkerPool]:
        return [p for p in (self.gpu, self.cpu) if p is not None]

    def _environment(
        self,
        name: str,
        *,
        spot: bool,
        instance_types: list[str],
        max_vcpus: int,
        image_type: batch.EcsMachineImageType,
    ) -> batch.ManagedEc2EcsComputeEnvironment:
        return batch.ManagedEc2EcsComputeEnvironment(
            self,
            name,
            vpc=self.network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            security_groups=[self.network.security_group],
            launch_template=self.launch_template,
            minv_cpus=0,
            maxv_cpus=max_vcpus,
            spot=spot,
            allocation_strategy=(
                batch.AllocationStrategy.SPOT_PRICE_CAPACITY_OPTIMIZED
                if spot
                else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE
            ),
            use_optimal_instance_classes=False,
            instance_types=[ec2.InstanceType(t) for t in instance_types],
            images=[batch.EcsMachineImage(image_type=image_type)],
            update_to_latest_image_version=True,
        )

    def _pool(
        self,
        name: str,
        *,
        instance_types: list[str],
        max_vcpus: int,
        image_type: batch.EcsMachineImageType,
        image: ecr_assets.DockerImageAsset,
        gpus: int,
        model: str,
        queue: sqs.IQueue,
    ) -> WorkerPool:
        order = []
        kinds = [("Spot", True), ("OnDemand", False)] if self.config.spot else [("OnDemand", False)]
        for i, (kind, spot) in enumerate(kinds, start=1):
            environment = self._environment(
                f"{name}{kind}", spot=spot, instance_types=instance_types, max_vcpus=max_vcpus, image_type=image_type
            )
            order.append(batch.OrderedComputeEnvironment(compute_environment=environment, order=i))
        job_queue = batch.JobQueue(
            self,
            f"{name}Queue",
            compute_environments=order,
            job_state_time_limit_actions=[
                batch.JobStateTimeLimitAction(
                    max_time=Duration.minutes(self.config.runnable_timeout_minutes), reason=reason
                )
                for reason in (
                    batch.JobStateTimeLimitActionsReason.INSUFFICIENT_INSTANCE_CAPACITY,
                    batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
                    batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
                )
            ],
        )
        role = iam.Role(
            self,
            f"{name}JobRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"Batchscribe {name} worker",
        )
        definition = batch.EcsJobDefinition(
            self,
            f"{name}JobDefinition",
            container=batch.EcsEc2ContainerDefinition(
                self,
                f"{name}Container",
                image=ecs.ContainerImage.from_docker_image_asset(image),
                cpu=4,
                memory=Size.mebibytes(14_336),
                gpu=gpus or None,
                job_role=role,
                environment={
                    **self.environment,
                    "BATCHSCRIBE_JOBS_QUEUE_URL": queue.queue_url,
                    "BATCHSCRIBE_MODEL": model,
                    "BATCHSCRIBE_ENGINE": self.config.engine,
                    "BATCHSCRIBE_DEVICE": "cuda" if gpus else "cpu",
                    "BATCHSCRIBE_IDLE_EXIT_SECONDS": str(self.config.worker_idle_seconds),
                    "BATCHSCRIBE_MAX_DURATION_SECONDS": str(self.config.max_duration_minutes * 60),
                    "AWS_REGION": Stack.of(self).region,
                },
                logging=ecs.LogDriver.aws_logs(stream_prefix=name.lower(), log_group=self.log_group),
                readonly_root_filesystem=False,
            ),
            timeout=Duration.minutes(self.config.batch_job_timeout_minutes),
            retry_attempts=3,
            retry_strategies=[
                batch.RetryStrategy.of(batch.Action.RETRY, batch.Reason.SPOT_INSTANCE_RECLAIMED),
                batch.RetryStrategy.of(batch.Action.EXIT, batch.Reason.custom(on_reason="*")),
            ],
            propagate_tags=True,
        )
        queue.grant_consume_messages(role)
        return WorkerPool(name=name.lower(), job_queue=job_queue, job_definition=definition, role=role, queue=queue)
