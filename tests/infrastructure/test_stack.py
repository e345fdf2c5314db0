"""CDK assertions on properties of the synthesized stack (the default deployment synthesized
once per test process: conftest.py), cdk-nag, cfn-lint, and both synth entry points. What a
worker's host gets (memory, disk, IMDS) is in test_worker_hosts.py, checkov in test_checkov.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from batchscribe.settings import ScalerSettings, WebhookSettings, WorkerSettings
from stacks.config import DeploymentConfig
from stacks.instances import INSTANCE_SPECS, PRICES, pool_hourly_usd
from tests.infrastructure.templates import ROOT, by_prefix, gateway_allow_origins, resources, synth
from tests.infrastructure.templates import resolve as _resolve

pytestmark = pytest.mark.slow


# ---- Batch -----------------------------------------------------------------------------


def test_compute_environments_scale_from_zero_on_gpu_instances(template_json: dict[str, Any]) -> None:
    envs = resources(template_json, "AWS::Batch::ComputeEnvironment")
    gpu = {k: v for k, v in envs.items() if "Gpu" in k}
    assert len(gpu) == 2
    for ce in envs.values():
        res = ce["Properties"]["ComputeResources"]
        assert res["MinvCpus"] == 0
    for ce in gpu.values():
        res = ce["Properties"]["ComputeResources"]
        assert set(res["InstanceTypes"]) == {"g4dn.xlarge", "g5.xlarge", "g6.xlarge"}
        assert res["Ec2Configuration"][0]["ImageType"] == "ECS_AL2023_NVIDIA"  # current driver branch
    spot = next(v for k, v in gpu.items() if "Spot" in k)["Properties"]["ComputeResources"]
    ondemand = next(v for k, v in gpu.items() if "OnDemand" in k)["Properties"]["ComputeResources"]
    assert (spot["Type"], spot["AllocationStrategy"]) == ("SPOT", "SPOT_PRICE_CAPACITY_OPTIMIZED")
    assert ondemand["Type"] == "EC2"


def test_gpu_queue_tries_spot_first_then_on_demand_and_cancels_stuck_jobs(template_json: dict[str, Any]) -> None:
    queue = by_prefix(template_json, "AWS::Batch::JobQueue", "ComputeGpuQueue")["Properties"]
    order = {o["Order"]: o["ComputeEnvironment"]["Fn::GetAtt"][0] for o in queue["ComputeEnvironmentOrder"]}
    assert "GpuSpot" in order[1] and "GpuOnDemand" in order[2]
    actions = queue["JobStateTimeLimitActions"]
    assert {a["Reason"] for a in actions} >= {
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
        "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
    }
    assert all(a["Action"] == "CANCEL" and a["State"] == "RUNNABLE" and a["MaxTimeSeconds"] == 1800 for a in actions)


def test_gpu_job_definition(template_json: dict[str, Any]) -> None:
    jd = by_prefix(template_json, "AWS::Batch::JobDefinition", "ComputeGpuJobDefinition")["Properties"]
    reqs = {r["Type"]: r["Value"] for r in jd["ContainerProperties"]["ResourceRequirements"]}
    assert reqs["GPU"] == "1"
    assert jd["Timeout"]["AttemptDurationSeconds"] == 360 * 60
    strategy = jd["RetryStrategy"]
    assert strategy["Attempts"] == 3
    assert strategy["EvaluateOnExit"] == [
        {"Action": "RETRY", "OnStatusReason": "Host EC2*"},
        # a worker that could not start (preflight, engine, settings): never retried
        {"Action": "EXIT", "OnExitCode": "69"},
        {"Action": "EXIT", "OnExitCode": "70"},
        {"Action": "EXIT", "OnExitCode": "78"},
        {"Action": "EXIT", "OnReason": "*"},
    ]
    env = {e["Name"]: e["Value"] for e in jd["ContainerProperties"]["Environment"]}
    assert env["BATCHSCRIBE_DEVICE"] == "cuda" and env["BATCHSCRIBE_MODEL"] == "large-v3-turbo"
    worker = WorkerSettings.from_env({k: _resolve(v) for k, v in env.items()})
    assert worker.timings == DeploymentConfig().timings  # idle exit, lease, heartbeat: the deployment's
    cpu = by_prefix(template_json, "AWS::Batch::JobDefinition", "ComputeCpuJobDefinition")["Properties"]
    assert "GPU" not in {r["Type"] for r in cpu["ContainerProperties"]["ResourceRequirements"]}
    # per-job cost: each pool's workers know the hourly price of the dearest type they may run on
    gpu_types, cpu_types = DeploymentConfig().gpu_instance_types, DeploymentConfig().cpu_instance_types
    assert worker.instance_hourly_usd == pool_hourly_usd(gpu_types, spot=True)
    cpu_env = {e["Name"]: e["Value"] for e in cpu["ContainerProperties"]["Environment"]}
    assert float(cpu_env[WorkerSettings.env_name("instance_hourly_usd")]) == pool_hourly_usd(cpu_types, spot=True)


def test_pool_prices_come_from_the_price_table() -> None:
    prices = json.loads(PRICES.read_text())
    g5 = prices["instances"]["g5.xlarge"]
    assert pool_hourly_usd(["g5.xlarge"], spot=False) == g5["on_demand_per_hour"]
    assert pool_hourly_usd(["g4dn.xlarge", "g5.xlarge"], spot=True) == max(
        g5["spot"]["typical_per_hour"], prices["instances"]["g4dn.xlarge"]["spot"]["typical_per_hour"]
    )
    assert pool_hourly_usd(["c6i.xlarge"], spot=False) == prices["pool_instances"]["c6i.xlarge"]["on_demand_per_hour"]
    assert pool_hourly_usd(["g5.xlarge", "x9.unknown"], spot=True) is None  # no guess: no cost
    for name in INSTANCE_SPECS:  # every type a pool may use has a price
        assert pool_hourly_usd([name], spot=True) is not None, name


def test_docker_images_are_declared_assets(cdk_out: Path, template_json: dict[str, Any]) -> None:
    jd = by_prefix(template_json, "AWS::Batch::JobDefinition", "ComputeGpuJobDefinition")["Properties"]
    assert "cdk-hnb659fds-container-assets" in json.dumps(jd["ContainerProperties"]["Image"])
    manifest = json.loads((cdk_out / "Batchscribe.assets.json").read_text())
    images = [a["source"] for a in manifest["dockerImages"].values()]
    args = sorted((i["dockerBuildArgs"]["DEVICE"], i["dockerBuildArgs"]["MODEL"]) for i in images)
    # one image per pool, each variant chosen by DEVICE on the one Dockerfile, on its default public base
    assert args == [("cpu", "small"), ("gpu", "large-v3-turbo")]
    assert all(i["dockerFile"] == "gpu_container/Dockerfile" and "BASE" not in i["dockerBuildArgs"] for i in images)


def test_cpu_pool_runs_amazon_linux_2023(template_json: dict[str, Any]) -> None:
    envs = resources(template_json, "AWS::Batch::ComputeEnvironment")
    cpu = [v for k, v in envs.items() if "Cpu" in k]
    assert cpu and all(
        ce["Properties"]["ComputeResources"]["Ec2Configuration"][0]["ImageType"] == "ECS_AL2023" for ce in cpu
    )


def test_no_nat_gateway(template_json: dict[str, Any]) -> None:
    assert resources(template_json, "AWS::EC2::NatGateway") == {}
    assert len(resources(template_json, "AWS::EC2::VPCEndpoint")) == 2  # S3 + DynamoDB gateways (free)


# ---- queues, table, bucket ----------------------------------------------------------------


def test_queues_have_dlqs_sse_and_longer_dlq_retention(template_json: dict[str, Any]) -> None:
    queues = resources(template_json, "AWS::SQS::Queue")
    sources = {k: v for k, v in queues.items() if "RedrivePolicy" in v["Properties"]}
    assert len(sources) == 8  # jobs and small jobs, 3 priority classes each; uploads; webhooks
    for name, q in sources.items():
        props = q["Properties"]
        # a webhook is tried max_attempts times before its sender gives up: the DLQ comes later
        receives = (
            WebhookSettings.model_fields["callback_max_attempts"].default + 2
            if name.startswith("NotifyWebhooks")
            else 5
        )
        assert props["RedrivePolicy"]["maxReceiveCount"] == receives, name
        dlq_id = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert queues[dlq_id]["Properties"]["MessageRetentionPeriod"] > props["MessageRetentionPeriod"], name
    for q in queues.values():
        assert q["Properties"]["SqsManagedSseEnabled"] is True
    jobs = next(v for k, v in sources.items() if k.startswith("ComputeGpuMessagesQueue"))
    assert jobs["Properties"]["VisibilityTimeout"] >= 120


def _deny_insecure(policy: dict[str, Any]) -> bool:
    return any(
        s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_tls_is_enforced_on_every_queue_and_bucket(template_json: dict[str, Any]) -> None:
    queue_policies = resources(template_json, "AWS::SQS::QueuePolicy")
    assert queue_policies and all(_deny_insecure(p) for p in queue_policies.values())
    covered = {q["Ref"] for p in queue_policies.values() for q in p["Properties"]["Queues"]}
    assert covered == set(resources(template_json, "AWS::SQS::Queue"))
    bucket_policies = resources(template_json, "AWS::S3::BucketPolicy")
    assert all(_deny_insecure(p) for p in bucket_policies.values())
    buckets = {p["Properties"]["Bucket"]["Ref"] for p in bucket_policies.values()}
    assert buckets == set(resources(template_json, "AWS::S3::Bucket")) and len(buckets) == 3  # media, logs, console


def test_table(template: Template) -> None:
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
            "GlobalSecondaryIndexes": Match.array_with(
                [
                    Match.object_like(
                        {
                            "IndexName": "by_owner",
                            "KeySchema": [
                                {"AttributeName": "owner", "KeyType": "HASH"},
                                {"AttributeName": "created_at", "KeyType": "RANGE"},
                            ],
                        }
                    ),
                    Match.object_like({"IndexName": "by_sweep"}),
                ]
            ),
        },
    )


def test_media_bucket(template_json: dict[str, Any]) -> None:
    bucket = by_prefix(template_json, "AWS::S3::Bucket", "JobsMedia")["Properties"]
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert (rules["uploads"]["Prefix"], rules["uploads"]["ExpirationInDays"]) == ("uploads/", 3)
    assert (rules["outputs"]["Prefix"], rules["outputs"]["ExpirationInDays"]) == ("outputs/", 30)
    assert "POST" in bucket["CorsConfiguration"]["CorsRules"][0]["AllowedMethods"]
    notes = next(iter(resources(template_json, "Custom::S3BucketNotifications").values()))["Properties"]
    queue_note = notes["NotificationConfiguration"]["QueueConfigurations"][0]
    assert queue_note["Events"] == ["s3:ObjectCreated:*"]
    assert queue_note["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "uploads/"}]


# ---- API -------------------------------------------------------------------------------


def _api_path(template_json: dict[str, Any], resource_id: Any) -> str:
    """The path of an API Gateway resource, from its PathPart chain (the root is a GetAtt)."""
    parts: list[str] = []
    while isinstance(resource_id, dict) and "Ref" in resource_id:
        props = template_json["Resources"][resource_id["Ref"]]["Properties"]
        parts.append(props["PathPart"])
        resource_id = props["ParentId"]
    return "/" + "/".join(reversed(parts))


def test_every_api_method_requires_iam(template_json: dict[str, Any]) -> None:
    from stacks.constructs.api import ROUTES

    methods = {k: v["Properties"] for k, v in resources(template_json, "AWS::ApiGateway::Method").items()}
    real = {k: m for k, m in methods.items() if m["HttpMethod"] != "OPTIONS"}
    assert len(real) == len(ROUTES)
    assert all(m["AuthorizationType"] == "AWS_IAM" for m in real.values())
    # each route of the Lambda's router, and no other, is a method of the gateway: no route
    # reaches the function without a SigV4 signature
    assert {(_api_path(template_json, m["ResourceId"]), m["HttpMethod"]) for m in real.values()} == set(ROUTES)
    assert all(m["Integration"]["Type"] == "AWS_PROXY" for m in real.values())
    assert all("RequestValidatorId" in m for m in real.values())
    # CORS preflight carries no credentials by the browser's rules; it returns headers only
    assert all(m["Integration"]["Type"] == "MOCK" for m in methods.values() if m["HttpMethod"] == "OPTIONS")


def test_api_stage_logs_traces_and_throttles(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": "v1",
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": Match.array_with(
                [
                    Match.object_like(
                        {
                            "LoggingLevel": "ERROR",
                            "MetricsEnabled": True,
                            "ThrottlingRateLimit": 50,
                            "ThrottlingBurstLimit": 100,
                        }
                    )
                ]
            ),
        },
    )
    template.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )


# ---- functions and IAM -------------------------------------------------------------------


def test_functions_are_arm64_python_with_powertools_and_xray(template_json: dict[str, Any]) -> None:
    fns = {
        v["Properties"]["Handler"]: v["Properties"]
        for v in resources(template_json, "AWS::Lambda::Function").values()
        if v["Properties"].get("Handler", "").startswith("lambdas.")
    }
    assert {h.split(".")[1] for h in fns} == {
        "api",
        "on_upload",
        "dead_letter",
        "sweeper",
        "scaler",
        "reconciler",
        "notify",
        "webhook",
    }
    for fn in fns.values():
        assert fn["Architectures"] == ["arm64"] and fn["Runtime"] == "python3.12"
        assert fn["TracingConfig"] == {"Mode": "Active"}
        assert "AWSLambdaPowertoolsPythonV3-python312-arm64" in json.dumps(fn["Layers"])
        assert fn["Handler"].startswith("lambdas.") and fn["Handler"].endswith(".handler.handler")


def test_the_functions_run_the_powertools_the_tests_run(cdk_out: Path, template_json: dict[str, Any]) -> None:
    """Powertools is copied into the functions' code asset from this environment, at the version
    lambdas/requirements.txt pins and the tests import (the managed layer's is shadowed: the
    function's own folder comes first on Lambda's import path), with its dependency the runtime
    lacks; pure Python only, as the functions run on arm64."""
    import importlib.metadata

    from aws_lambda_powertools.shared.version import VERSION

    from stacks.constructs.functions import pins

    assert pins()["aws-lambda-powertools"] == importlib.metadata.version("aws-lambda-powertools") == VERSION
    keys = {
        v["Properties"]["Code"]["S3Key"]
        for v in resources(template_json, "AWS::Lambda::Function").values()
        if v["Properties"].get("Handler", "").startswith("lambdas.")
    }
    [key] = keys  # one asset for every function
    asset = cdk_out / f"asset.{key.removesuffix('.zip')}"
    version = (asset / "aws_lambda_powertools" / "shared" / "version.py").read_text()
    assert f'VERSION = "{VERSION}"' in version
    assert (asset / "typing_extensions.py").exists()
    assert sorted(p.name for p in asset.iterdir()) == [
        "aws_lambda_powertools",
        "batchscribe",
        "lambdas",
        "typing_extensions.py",
    ]
    assert not [p for p in asset.rglob("*") if p.suffix in (".so", ".pyd", ".pyc")]


def test_synth_fails_when_the_installed_powertools_is_not_the_pinned_one(tmp_path: Path) -> None:
    from stacks.constructs.functions import bundle

    pinned = tmp_path / "requirements.txt"
    pinned.write_text("aws-lambda-powertools==3.0.0\ntyping-extensions==4.16.0\n")
    with pytest.raises(
        RuntimeError, match=r"aws-lambda-powertools 3\.37\.0 is installed, requirements.txt pins 3\.0\.0"
    ):
        bundle(tmp_path / "asset", pinned)


def test_every_log_group_is_encrypted_with_the_logs_key(template_json: dict[str, Any]) -> None:
    """Functions', workers', API access and VPC flow logs: one customer-managed key, which CloudWatch
    Logs of this account and region may use for its log groups only."""
    groups = resources(template_json, "AWS::Logs::LogGroup")
    assert len(groups) == 11
    keys = {g["Properties"]["KmsKeyId"]["Fn::GetAtt"][0] for g in groups.values()}
    [key_id] = keys
    assert key_id.startswith("LogsKey")
    key = template_json["Resources"][key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    [logs] = [s for s in key["KeyPolicy"]["Statement"] if s.get("Sid") == "CloudWatchLogsEncrypt"]
    assert logs["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    context = _resolve(logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
    assert context == "arn:ref-AWS::Partition:logs:us-east-1:ref-AWS::AccountId:log-group:*"


def _actions_of(template_json: dict[str, Any], role_prefix: str) -> set[str]:
    roles = [k for k in resources(template_json, "AWS::IAM::Role") if k.startswith(role_prefix)]
    assert len(roles) == 1, (role_prefix, roles)
    actions: set[str] = set()
    for policy in resources(template_json, "AWS::IAM::Policy").values():
        if {"Ref": roles[0]} in policy["Properties"]["Roles"]:
            for s in policy["Properties"]["PolicyDocument"]["Statement"]:
                a = s["Action"]
                actions |= set(a if isinstance(a, list) else [a])
    return actions


XRAY = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_exact_iam_actions_per_function(template_json: dict[str, Any]) -> None:
    s3_read = {"s3:GetObject*", "s3:GetBucket*", "s3:List*"}
    s3_put = {
        "s3:PutObject",
        "s3:PutObjectLegalHold",
        "s3:PutObjectRetention",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:Abort*",
    }
    send = {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"}
    consume = {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    }
    state = {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}
    assert _actions_of(template_json, "ApiServiceRole") == XRAY | s3_read | s3_put | state | send | {
        "dynamodb:PutItem",
        "s3:ListMultipartUploadParts",  # on uploads/* only: resuming a multipart upload
        "dynamodb:BatchGetItem",
        "lambda:InvokeFunction",  # wakes the scaler for a source-URL job (queued at create)
    }
    assert _actions_of(template_json, "IntakeOnUploadServiceRole") == XRAY | s3_read | consume | send | {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "s3:DeleteObject*",
        "lambda:InvokeFunction",
    }
    assert _actions_of(template_json, "LifecycleDeadLetterServiceRole") == XRAY | consume | send | {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
    }
    assert _actions_of(template_json, "LifecycleSweeperServiceRole") == XRAY | state | send
    assert _actions_of(template_json, "LifecycleReconcilerServiceRole") == XRAY | state | send
    assert _actions_of(template_json, "ScalingScalerServiceRole") == XRAY | {
        "sqs:GetQueueAttributes",
        "batch:SubmitJob",
        "batch:ListJobs",
        "batch:DescribeJobs",  # array parents' children
        "batch:CancelJob",  # workers stuck on Spot
        "dynamodb:GetItem",  # its lease, and no other item (next test)
        "dynamodb:UpdateItem",
    }
    notify = _actions_of(template_json, "NotifyServiceRole")
    stream = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
    # ... and ADDs to the operator's hourly counters, no other item (test_notify_writes_only_stats_counters)
    assert notify == XRAY | send | stream | {"events:PutEvents", "dynamodb:UpdateItem"}
    # the webhook sender reads and records one job, reads its signing secret, consumes its queue
    assert _actions_of(template_json, "NotifyWebhookServiceRole") == XRAY | consume | {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    # the worker also sends: a job over its owner's running cap goes back on its queue
    for pool in ("Gpu", "Cpu"):
        worker = _actions_of(template_json, f"Compute{pool}JobRole")
        assert worker == state | consume | send | s3_read | s3_put | {"s3:DeleteObject*"}, pool
    assert not any(a.endswith(":*") or a == "*" for a in worker)


def test_each_pool_has_a_queue_per_priority_class_every_part_of_the_pipeline_uses(
    template_json: dict[str, Any],
) -> None:
    """high/normal/low queues (each with its DLQ) per pool: the worker consumes all three, the
    intake and the lifecycle send to all three, the dead-letter function drains all three DLQs,
    the scaler reads all three depths, and each process is told their URLs."""
    queues = resources(template_json, "AWS::SQS::Queue")
    for pool in ("Gpu", "Cpu"):
        ids = {cls: by_prefix_id(queues, f"Compute{pool}{cls}MessagesQueue") for cls in ("High", "", "Low")}
        for cls, queue_id in ids.items():
            props = queues[queue_id]["Properties"]
            assert props["RedrivePolicy"]["maxReceiveCount"] == 5, cls
            assert props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0].startswith(
                f"Compute{pool}{cls}MessagesDlq"
            )
        role = _statements_of(template_json, f"Compute{pool}JobRole")
        consumed = {r["Fn::GetAtt"][0] for st in role if "sqs:ReceiveMessage" in st["Action"] for r in _list(st)}
        assert consumed == set(ids.values())
        [jd] = [v for k, v in resources(template_json, "AWS::Batch::JobDefinition").items() if pool in k]
        env = {e["Name"]: e["Value"] for e in jd["Properties"]["ContainerProperties"]["Environment"]}
        urls = json.loads(_resolve(env[WorkerSettings.env_name("class_queue_urls")]).replace("ref-", ""))
        assert urls == {"high": ids["High"], "low": ids["Low"]}
    dlq_sources = [
        v["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        for v in resources(template_json, "AWS::Lambda::EventSourceMapping").values()
        if "Dlq" in v["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
        and v["Properties"]["FunctionName"]["Ref"].startswith("LifecycleDeadLetter")
    ]
    assert len(dlq_sources) == 6  # 2 pools x 3 classes
    scaler = _statements_of(template_json, "ScalingScalerServiceRole")
    read = {r["Fn::GetAtt"][0] for st in scaler if st["Action"] == "sqs:GetQueueAttributes" for r in _list(st)}
    assert len(read) == 6


def _scaler_env(template_json: dict[str, Any]) -> dict[str, Any]:
    """The scaler function's environment variables."""
    [env] = [
        f["Properties"]["Environment"]["Variables"]
        for f in resources(template_json, "AWS::Lambda::Function").values()
        if f["Properties"]["Role"]["Fn::GetAtt"][0].startswith("ScalingScalerServiceRole")
    ]
    return dict(env)


def test_the_scaler_writes_only_its_lease_item_of_the_jobs_table(template_json: dict[str, Any]) -> None:
    """One scaler run at a time: a lease item in the jobs table, the scaler's only access to it."""
    [lease] = [
        st for st in _statements_of(template_json, "ScalingScalerServiceRole") if "dynamodb:UpdateItem" in st["Action"]
    ]
    assert sorted(lease["Action"]) == ["dynamodb:GetItem", "dynamodb:UpdateItem"]
    assert lease["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["scaler#lock"]}}
    env = _scaler_env(template_json)
    table = env[ScalerSettings.env_name("lease_table")]
    assert table["Ref"].startswith("JobsTable")


def test_each_pool_has_an_on_demand_queue_the_scaler_moves_stuck_spot_workers_to(template_json: dict[str, Any]) -> None:
    """With Spot, each pool has a second Batch queue on its on-demand environment alone; the
    scaler knows it (and the time after which it moves a worker there) and may submit to it."""
    queues = resources(template_json, "AWS::Batch::JobQueue")
    for pool in ("Gpu", "Cpu"):
        first, on_demand = (
            by_prefix_id(queues, f"Compute{pool}Queue"),
            by_prefix_id(queues, f"Compute{pool}OnDemandQueue"),
        )
        order = [
            e["ComputeEnvironment"]["Fn::GetAtt"][0] for e in queues[first]["Properties"]["ComputeEnvironmentOrder"]
        ]
        assert [e.split(pool)[1][:4] for e in order] == ["Spot", "OnDe"]
        again = queues[on_demand]["Properties"]["ComputeEnvironmentOrder"]
        assert [e["ComputeEnvironment"]["Fn::GetAtt"][0] for e in again] == order[1:]
    env = _scaler_env(template_json)
    assert env[ScalerSettings.env_name("spot_fallback_seconds")] == "600"
    assert "OnDemandQueue" in json.dumps(env[ScalerSettings.env_name("pools")])
    submit = [
        st for st in _statements_of(template_json, "ScalingScalerServiceRole") if st["Action"] == "batch:SubmitJob"
    ]
    targets = {r.get("Ref") or r["Fn::GetAtt"][0] for st in submit for r in st["Resource"] if isinstance(r, dict)}
    assert {by_prefix_id(queues, f"Compute{p}OnDemandQueue") for p in ("Gpu", "Cpu")} <= targets


def test_the_scaler_knows_each_pools_held_jobs(template_json: dict[str, Any]) -> None:
    """The scaler counts a running worker's free slots from the K its workers hold (the K the
    job definition gives them), so jobs a worker has claimed start no other worker."""
    [env] = [
        f["Properties"]["Environment"]["Variables"]
        for f in resources(template_json, "AWS::Lambda::Function").values()
        if f["Properties"]["Role"]["Fn::GetAtt"][0].startswith("ScalingScalerServiceRole")
    ]
    pools = json.dumps(env[ScalerSettings.env_name("pools")])
    held = [
        v["Value"]
        for d in resources(template_json, "AWS::Batch::JobDefinition").values()
        for v in d["Properties"]["ContainerProperties"]["Environment"]
        if v["Name"] == WorkerSettings.env_name("max_held_jobs")
    ]
    assert len(held) == 2, held  # the GPU pool's and the CPU pool's
    assert all(f'\\"held_jobs\\":{k}' in pools for k in held), (held, pools)


def test_batch_scheduling_is_one_fifo_queue_per_pool(template_json: dict[str, Any]) -> None:
    """Priorities and fairness are the workers' (class queues, weighted receive, per-owner cap):
    every Batch job is an identical worker of the same service, so Batch job queue priorities or
    a fair-share policy would have nothing to order (docs/design.md 'Design notes'). (With Spot, each pool
    has a second queue, on-demand only, for workers Spot cannot place.)"""
    job_queues = resources(template_json, "AWS::Batch::JobQueue")
    assert len(job_queues) == 4
    assert not resources(template_json, "AWS::Batch::SchedulingPolicy")
    assert all("SchedulingPolicyArn" not in q["Properties"] for q in job_queues.values())


def by_prefix_id(found: dict[str, Any], prefix: str) -> str:
    [key] = [k for k in found if k.startswith(prefix) and k[len(prefix) :].isalnum() and len(k) - len(prefix) == 8]
    return key


def _list(statement: dict[str, Any]) -> list[Any]:
    res = statement["Resource"]
    return [r for r in (res if isinstance(res, list) else [res]) if isinstance(r, dict) and "Fn::GetAtt" in r]


def _statements_of(t: dict[str, Any], role_prefix: str) -> list[dict[str, Any]]:
    out = []
    for policy in resources(t, "AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        if any(r.get("Ref", "").startswith(role_prefix) for r in roles):
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


# ---- process environments ------------------------------------------------------------------


def _check_env(model: type[Any], env: dict[str, Any]) -> None:
    from batchscribe.settings import ENV_PREFIX

    ours = {k: _resolve(v) for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert model.required_env_names() <= set(ours) <= model.env_names(), (model.__name__, sorted(ours))
    model.from_env(ours)  # every value is valid for the model that reads it


def test_every_process_is_configured_from_its_own_settings_model(template_json: dict[str, Any]) -> None:
    from batchscribe.settings import PROCESS_SETTINGS

    fns = {
        v["Properties"]["Handler"].split(".")[1]: v["Properties"]
        for v in resources(template_json, "AWS::Lambda::Function").values()
        if v["Properties"].get("Handler", "").startswith("lambdas.")
    }
    assert set(fns) == set(PROCESS_SETTINGS) - {"worker"}
    for process, fn in fns.items():
        _check_env(PROCESS_SETTINGS[process], fn["Environment"]["Variables"])
    definitions = resources(template_json, "AWS::Batch::JobDefinition").values()
    assert len(definitions) == 2
    for jd in definitions:
        env = {e["Name"]: e["Value"] for e in jd["Properties"]["ContainerProperties"]["Environment"]}
        _check_env(PROCESS_SETTINGS["worker"], env)


def test_queue_visibility_and_function_timeouts_come_from_the_timings(template_json: dict[str, Any]) -> None:
    t = DeploymentConfig().timings
    queues = resources(template_json, "AWS::SQS::Queue")
    for prefix in ("ComputeGpuMessagesQueue", "ComputeCpuMessagesQueue"):
        assert by_prefix(template_json, "AWS::SQS::Queue", prefix)["Properties"]["VisibilityTimeout"] == (
            t.visibility_seconds
        )
    uploads = next(v for k, v in queues.items() if k.startswith("IntakeUploadsQueue"))["Properties"]
    on_upload = by_prefix(template_json, "AWS::Lambda::Function", "IntakeOnUpload")["Properties"]
    assert uploads["VisibilityTimeout"] >= 6 * on_upload["Timeout"]
    dead_letter = by_prefix(template_json, "AWS::Lambda::Function", "LifecycleDeadLetter")["Properties"]
    for k, q in queues.items():
        if k.startswith("ComputeGpuMessagesDlq"):
            assert q["Properties"]["VisibilityTimeout"] >= 6 * dead_letter["Timeout"]


# ---- schedules, events, alarms -------------------------------------------------------------


def test_schedules_and_event_rules(template_json: dict[str, Any]) -> None:
    rules = {k: v["Properties"] for k, v in resources(template_json, "AWS::Events::Rule").items()}
    scheduled = {k: r for k, r in rules.items() if r.get("ScheduleExpression")}
    assert {k.rstrip("0123456789ABCDEF") for k in scheduled} == {"ScalingSchedule", "LifecycleSweeperSchedule"}
    assert all(r["ScheduleExpression"] == "rate(1 minute)" for r in scheduled.values())
    exited = next(r for k, r in rules.items() if k.startswith("LifecycleWorkerExited"))
    assert exited["EventPattern"]["detail-type"] == ["Batch Job State Change"]
    assert exited["EventPattern"]["detail"]["status"] == ["SUCCEEDED", "FAILED"]


def _alarm_metric(alarm: dict[str, Any]) -> tuple[str, str, int]:
    """(metric name, statistic, period) of a single-metric alarm, in either of the forms CDK
    writes it: the plain one, or one labelled metric in `Metrics`."""
    if "MetricName" in alarm:
        return alarm["MetricName"], alarm["Statistic"], alarm["Period"]
    [metric] = alarm["Metrics"]
    stat = metric["MetricStat"]
    return stat["Metric"]["MetricName"], stat["Stat"], stat["Period"]


def test_alarms(template_json: dict[str, Any]) -> None:
    """Every alarm the README's runbook names, by its deployed name, on the metric it watches."""
    alarms = {
        v["Properties"]["AlarmName"]: v["Properties"]
        for v in resources(template_json, "AWS::CloudWatch::Alarm").values()
    }

    def named(name: str) -> dict[str, Any]:
        alarm = alarms[f"Batchscribe-{name}"]
        assert alarm["EvaluationPeriods"] == 1 and alarm["TreatMissingData"] == "notBreaching", name
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold", name
        return alarm

    for dlq in ("Jobs", "SmallJobs", "Uploads", "Notify", "Webhooks"):
        a = named(f"{dlq}DeadLetters")
        assert (_alarm_metric(a), a["Threshold"]) == (("ApproximateNumberOfMessagesVisible", "Maximum", 300), 0)
        assert "Runbook: docs/operations.md 'DLQ redrive'" in a["AlarmDescription"]
    starved = named("JobsStarvation")
    assert (_alarm_metric(starved)[0], starved["Threshold"]) == ("ApproximateAgeOfOldestMessage", 1800)
    # per priority class and pool: the age of the oldest message; low may wait 4x as long
    for pool in ("Jobs", "SmallJobs"):
        for cls, threshold in (("High", 1800), ("", 1800), ("Low", 7200)):
            a = named(f"{pool}{cls}Starvation")
            assert (_alarm_metric(a), a["Threshold"]) == (("ApproximateAgeOfOldestMessage", "Maximum", 300), threshold)
            dead = named(f"{pool}{cls}DeadLetters")
            assert _alarm_metric(dead)[0] == "ApproximateNumberOfMessagesVisible"
    rate = named("FailedJobRate")
    assert rate["Threshold"] == 0.2 and rate["Metrics"]
    expression = next(m for m in rate["Metrics"] if "Expression" in m)
    assert expression["Expression"] == "IF(f + s >= 5, f / (f + s), 0)"
    assert _alarm_metric(named("Api5xx"))[:2] == ("5XXError", "Sum")
    # every function's errors, each in its own alarm
    functions = {
        "".join(part.capitalize() for part in f["Properties"]["Handler"].split(".")[1].split("_"))
        for f in resources(template_json, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("lambdas.")
    }
    assert len(functions) == 8
    for fn in functions:
        assert _alarm_metric(named(f"{fn}Errors"))[:2] == ("Errors", "Sum")
    # 9 DLQs (6 classes, uploads, webhooks, notify), 6 starvation, the failed rate, the API, the
    # functions' errors and throttles, the table's and its 2 indexes' read and write throttles,
    # workers that could not start (tests/infrastructure/test_worker_preflight.py)
    assert len(alarms) == 9 + 6 + 1 + 1 + 2 * len(functions) + 2 * 3 + 1, sorted(alarms)
    # the deploy guide's cost paragraph counts them
    assert f"{len(alarms)} CloudWatch alarms" in (ROOT / "docs" / "deploy.md").read_text()
    # and every runbook an alarm names is a page that has it, in bold or as a heading
    for alarm in alarms.values():
        found = re.search(r"Runbook: (docs/[a-z]+\.md) '([^']+)'", alarm["AlarmDescription"])
        assert found, alarm["AlarmName"]
        page = (ROOT / found[1]).read_text()
        assert f"**{found[2]}**" in page or f"### {found[2]}\n" in page, (alarm["AlarmName"], found[2])
    [topic] = resources(template_json, "AWS::SNS::Topic")
    assert all(a["AlarmActions"] == [{"Ref": topic}] and a["ActionsEnabled"] is True for a in alarms.values())


def test_throttles_alarm(template_json: dict[str, Any]) -> None:
    """A throttled function (a new account's concurrency of 10 is soon used up) or a throttled table
    or index (a hot partition key) alarms at once, before it shows up as starved jobs."""
    from batchscribe.resources import TABLE_INDEXES

    alarms = {
        v["Properties"]["AlarmName"].removeprefix("Batchscribe-"): v["Properties"]
        for v in resources(template_json, "AWS::CloudWatch::Alarm").values()
    }

    def watched(name: str) -> tuple[str, dict[str, Any], str, int]:
        """(metric, dimensions, statistic, threshold) of a throttle alarm (its metric maybe in a FILL())."""
        alarm = alarms[name]
        assert "Runbook: docs/operations.md 'Throttling'" in alarm["AlarmDescription"], name
        assert (alarm["ComparisonOperator"], alarm["EvaluationPeriods"]) == ("GreaterThanThreshold", 1), name
        if "MetricName" in alarm:
            dims = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
            return alarm["MetricName"], dims, alarm["Statistic"], alarm["Threshold"]
        [stat] = [m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m]
        dims = {d["Name"]: d["Value"] for d in stat["Metric"].get("Dimensions", [])}
        return stat["Metric"]["MetricName"], dims, stat["Stat"], alarm["Threshold"]

    functions = {
        k: v["Properties"]["Handler"].split(".")[1]
        for k, v in resources(template_json, "AWS::Lambda::Function").items()
        if v["Properties"].get("Handler", "").startswith("lambdas.")
    }
    for logical_id, process in functions.items():
        name = "".join(part.capitalize() for part in process.split("_"))
        assert watched(f"{name}Throttles") == ("Throttles", {"FunctionName": {"Ref": logical_id}}, "Sum", 0)
    [table] = resources(template_json, "AWS::DynamoDB::Table")
    for kind in ("Read", "Write"):
        assert watched(f"JobsTable{kind}Throttles") == (
            f"{kind}ThrottleEvents",
            {"TableName": {"Ref": table}},
            "Sum",
            0,
        )
        for index in TABLE_INDEXES:
            label = "Jobs" + "".join(part.capitalize() for part in index.split("_"))
            dims = {"TableName": {"Ref": table}, "GlobalSecondaryIndexName": index}
            assert watched(f"{label}{kind}Throttles") == (f"{kind}ThrottleEvents", dims, "Sum", 0)


def _dashboard_body(template_json: dict[str, Any]) -> dict[str, Any]:
    [dashboard] = resources(template_json, "AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "Batchscribe-jobs"
    body: dict[str, Any] = json.loads(_resolve(dashboard["Properties"]["DashboardBody"]))
    return body


def test_the_dashboard_answers_the_runbooks_questions(template_json: dict[str, Any]) -> None:
    """Queue depth (visible and in flight) and the oldest job of every class queue, DLQ depth, job
    outcomes, the failed-job rate, workers active/started per pool, API latency p50/p90/p99, and
    every function's errors: each is a graph on the one dashboard."""
    graphs: dict[str | None, list[list[Any]]] = {}
    for widget in _dashboard_body(template_json)["widgets"]:
        if widget["type"] == "metric":
            graphs.setdefault(widget["properties"].get("title"), []).extend(widget["properties"].get("metrics", []))

    def plotted(title: str) -> list[list[Any]]:
        assert title in graphs, sorted(t for t in graphs if t)
        return graphs[title]

    def names(metrics: list[list[Any]], namespace: str | None = None) -> list[str]:
        """The metric names of a graph's plain metrics (not its expressions), of `namespace` if given."""
        return [m[1] for m in metrics if isinstance(m[0], str) and namespace in (None, m[0])]

    depth = names(plotted("Queue depth (visible / in flight)"))
    assert (
        depth.count("ApproximateNumberOfMessagesVisible") == depth.count("ApproximateNumberOfMessagesNotVisible") == 6
    )
    assert names(plotted("Oldest Message Age")).count("ApproximateAgeOfOldestMessage") == 9  # 6 classes, uploads, ...
    assert names(plotted("DLQ: Message Count")).count("ApproximateNumberOfMessagesVisible") == 8
    assert set(names(plotted("Job outcomes"))) == {"JobsSucceeded", "JobsFailed", "JobsCancelled"}
    assert set(names(plotted("Workers (active / started)"))) == {
        f"{kind}_{pool}" for kind in ("ActiveWorkers", "WorkersStarted") for pool in ("gpu", "cpu")
    }
    assert any("IF(f + s >= 5" in json.dumps(m) for m in plotted("Failed job rate"))
    api_latency = [m[-1]["stat"] for m in plotted("Latency") if m[:2] == ["AWS/ApiGateway", "Latency"]]
    assert sorted(api_latency) == ["p50", "p90", "p99"]
    assert names(plotted("Errors"), "AWS/Lambda").count("Errors") == 8  # every function's error count


def test_alarms_can_reach_their_topic(template_json: dict[str, Any]) -> None:
    """CloudWatch cannot use the AWS-managed SNS key, and the TLS-only topic policy replaces SNS's
    default one: the topic needs a customer-managed key CloudWatch may use, and an Allow for it."""
    [topic] = resources(template_json, "AWS::SNS::Topic").values()
    key_ref = topic["Properties"]["KmsMasterKeyId"]
    assert "alias/aws/sns" not in json.dumps(key_ref)
    key_id = key_ref["Fn::GetAtt"][0]
    key = resources(template_json, "AWS::KMS::Key")[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True
    cloudwatch = [
        st for st in key["KeyPolicy"]["Statement"] if st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert cloudwatch and {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(cloudwatch[0]["Action"])
    [policy] = resources(template_json, "AWS::SNS::TopicPolicy").values()
    publish = [
        st
        for st in policy["Properties"]["PolicyDocument"]["Statement"]
        if st["Effect"] == "Allow" and st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert publish and publish[0]["Action"] == "sns:Publish" and "aws:SourceAccount" in json.dumps(publish[0])


def test_browsers_get_cors_headers_on_gateway_errors_too(template_json: dict[str, Any]) -> None:
    """Every error API Gateway answers itself carries the CORS headers, the two defaults too: a
    401, 413, 415 or 429 of a type without its own response is a DEFAULT_4XX, and without the
    headers a browser reads it as a CORS failure, not as the error it is."""
    responses = resources(template_json, "AWS::ApiGateway::GatewayResponse").values()
    assert {r["Properties"]["ResponseType"] for r in responses} >= {
        "ACCESS_DENIED",
        "THROTTLED",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
        "INVALID_SIGNATURE",  # a bad or expired signature answers in the one error shape too
        "EXPIRED_TOKEN",
    }
    cors = {
        r["Properties"]["ResponseType"]: {
            k: v for k, v in r["Properties"]["ResponseParameters"].items() if k.startswith("gatewayresponse.header.")
        }
        for r in responses
    }
    assert cors["DEFAULT_4XX"]["gatewayresponse.header.Access-Control-Allow-Origin"] == "'*'"
    assert all(headers == cors["DEFAULT_4XX"] for headers in cors.values()), cors
    bodies = {
        r["Properties"]["ResponseType"]: r["Properties"]["ResponseTemplates"]["application/json"] for r in responses
    }
    assert '"code": "request_rejected"' in bodies["DEFAULT_4XX"]
    fn = by_prefix(template_json, "AWS::Lambda::Function", "ApiCD79")["Properties"]
    assert json.loads(fn["Environment"]["Variables"]["BATCHSCRIBE_CORS_ORIGINS"]) == ["*"]


def _execute_api_prefix(template_json: dict[str, Any]) -> str:
    [api] = resources(template_json, "AWS::ApiGateway::RestApi")
    [stage] = resources(template_json, "AWS::ApiGateway::Stage")
    return f"arn:ref-AWS::Partition:execute-api:us-east-1:ref-AWS::AccountId:ref-{api}/ref-{stage}"


def _output_policy(template_json: dict[str, Any], output: str) -> dict[str, Any]:
    ref = template_json["Outputs"][output]["Value"]["Ref"]
    policy = template_json["Resources"][ref]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert "Roles" not in policy["Properties"] and "Users" not in policy["Properties"]  # attached by the deployer
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "execute-api:Invoke")
    resource = statement["Resource"]
    return {"resources": [_resolve(r) for r in (resource if isinstance(resource, list) else [resource])]}


def test_a_managed_policy_lets_other_callers_invoke_the_api(template_json: dict[str, Any]) -> None:
    """The output InvokePolicyArn names a managed policy that allows execute-api:Invoke on the job
    and model routes of this API's stage, and not on the operator's statistics route: what the
    deploy guide attaches to a caller."""
    prefix = _execute_api_prefix(template_json)
    invoke = _output_policy(template_json, "InvokePolicyArn")["resources"]
    assert invoke == [f"{prefix}/*/jobs", f"{prefix}/*/jobs/*", f"{prefix}/*/models"]
    assert not any(r.endswith("/*/*") or "admin" in r for r in invoke)


def test_only_the_stats_policy_covers_the_operator_statistics_route(template_json: dict[str, Any]) -> None:
    """GET /admin/stats answers every owner's aggregates and job ids: the output StatsPolicyArn
    names a managed policy for that one route and method, and no role of the stack holds it."""
    prefix = _execute_api_prefix(template_json)
    assert _output_policy(template_json, "StatsPolicyArn")["resources"] == [f"{prefix}/GET/admin/stats"]
    methods = [m["Properties"] for m in resources(template_json, "AWS::ApiGateway::Method").values()]
    admin = [m for m in methods if _api_path(template_json, m["ResourceId"]) == "/admin/stats"]
    assert [(m["HttpMethod"], m["AuthorizationType"]) for m in admin if m["HttpMethod"] != "OPTIONS"] == [
        ("GET", "AWS_IAM")
    ]


def test_notify_writes_only_stats_counters(template_json: dict[str, Any]) -> None:
    """The notify function may UpdateItem the jobs table only on the operator's counter items
    (`stats#<hour>`): a condition on the leading key, as the scaler's lease."""
    [update] = [
        st for st in _statements_of(template_json, "NotifyServiceRole") if "dynamodb:UpdateItem" in st["Action"]
    ]
    assert update["Action"] == "dynamodb:UpdateItem"
    assert update["Condition"] == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["stats#*"]}}


def test_cors_with_named_origins(tmp_path: Path) -> None:
    """One origin is answered as a constant (without the console, whose origin would be a second:
    test_console.py), several by echoing the request's Origin (the handler checks it)."""
    one = synth(tmp_path / "one", cors_origins=["https://app.example.com"], console=False)
    assert gateway_allow_origins(one) == {"'https://app.example.com'"}
    two = synth(tmp_path / "two", cors_origins=["https://a.example.com", "https://b.example.com"])
    assert gateway_allow_origins(two) == {"method.request.header.Origin"}


def test_no_reserved_concurrency_unless_asked(template_json: dict[str, Any], tmp_path: Path) -> None:
    """New accounts' concurrency quota (10) cannot spare reservations: a reservation fails the deploy."""
    fns = resources(template_json, "AWS::Lambda::Function").values()
    assert not [f for f in fns if "ReservedConcurrentExecutions" in f["Properties"]]
    reserved = synth(tmp_path, reserve_concurrency=True)
    singles = {
        f["Properties"]["Handler"].split(".")[1]
        for f in resources(reserved, "AWS::Lambda::Function").values()
        if f["Properties"].get("ReservedConcurrentExecutions") == 1
    }
    assert singles == {"scaler", "sweeper"}


# ---- configuration variants -------------------------------------------------------------


def test_spot_off_and_no_cpu_pool(tmp_path: Path) -> None:
    t = synth(tmp_path, spot=False, small_job_max_mb=0)
    envs = resources(t, "AWS::Batch::ComputeEnvironment")
    assert len(envs) == 1
    assert next(iter(envs.values()))["Properties"]["ComputeResources"]["Type"] == "EC2"
    assert len(resources(t, "AWS::Batch::JobQueue")) == 1


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="not a GPU instance type"):
        DeploymentConfig(gpu_instance_types=["m6i.xlarge"])
    with pytest.raises(ValueError, match="not a known instance type"):
        DeploymentConfig(cpu_instance_types=["x9.huge"])
    with pytest.raises(ValueError):
        DeploymentConfig.from_context({"unknown_setting": 1})
    assert DeploymentConfig.from_context('{"spot": false}').spot is False
    with pytest.raises(ValueError, match="spot_fallback_minutes must be below runnable_timeout_minutes"):
        DeploymentConfig(spot_fallback_minutes=30, runnable_timeout_minutes=30)


# ---- cdk-nag, cfn-lint, the two synth entry points -----------------------------------------


def test_cdk_nag_findings_are_all_acknowledged_with_reasons(template_json: dict[str, Any]) -> None:
    """The module's stack synthesized with the AwsSolutions checks on (an unacknowledged finding
    fails synth); every acknowledgement carries a written reason."""
    from stacks.nag import ACKNOWLEDGED

    assert template_json["Resources"]
    assert ACKNOWLEDGED and all(len(reason) > 40 for reason in ACKNOWLEDGED.values())


def test_cdk_nag_is_active(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its acknowledgements the same stack fails synth: the checks really run."""
    import stacks.nag

    monkeypatch.setattr(stacks.nag, "ACKNOWLEDGED", {})
    with pytest.raises(Exception, match="ValidationFailed"):
        synth(tmp_path)


def test_cfn_lint_has_no_errors(tmp_path: Path, template_json: dict[str, Any]) -> None:
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template_json))
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    out = subprocess.run(
        [str(cfn_lint), "--non-zero-exit-code", "error", str(path)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_python_app_and_pinned_cdk_cli_synth_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "AWS_EC2_METADATA_DISABLED": "true",
        # cdk.json runs `python3 app.py`: the virtual environment's python must come first
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (ROOT / "cdk.out" / "Batchscribe.template.json").exists()
    cli = ROOT / "node_modules" / ".bin" / "cdk"
    assert cli.exists(), "run `npm ci` (make venv does) to install the pinned CDK CLI"
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert version.stdout.startswith(json.loads((ROOT / "package.json").read_text())["devDependencies"]["aws-cdk"])
    out = subprocess.run(
        [str(cli), "synth", "-q", "-o", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "out" / "Batchscribe.template.json").exists()


# Actions AWS authorizes only on `"Resource": "*"` (no resource-level permissions in the
# Service Authorization Reference): the only ones a policy here may grant on `*`.
STAR_ONLY_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ecr:GetAuthorizationToken",
    "batch:ListJobs",
    "batch:DescribeJobs",
    "dynamodb:ListStreams",
    "cloudwatch:PutMetricData",
}


def _statements(template_json: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [
        (name, s)
        for name, policy in resources(template_json, "AWS::IAM::Policy").items()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    for name, role in resources(template_json, "AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            out += [(name, s) for s in inline["PolicyDocument"]["Statement"]]
    return out


def test_no_wildcard_resource_where_a_narrower_one_exists(template_json: dict[str, Any]) -> None:
    """Every Allow on `*` is an action that cannot be scoped; no action is a bare `*` or `svc:*`."""
    statements = _statements(template_json)
    assert len(statements) > 20
    for name, s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), (name, actions)
        res = s.get("Resource")
        if s["Effect"] == "Allow" and "*" in (res if isinstance(res, list) else [res]):
            assert set(actions) <= STAR_ONLY_ACTIONS, (name, set(actions) - STAR_ONLY_ACTIONS)


def test_the_api_knows_the_deployments_models(template_json: dict[str, Any]) -> None:
    """The API refuses a non-English language for an English-only model: it gets the names."""
    from batchscribe.settings import ApiSettings

    config = DeploymentConfig.from_context(json.loads((ROOT / "cdk.json").read_text())["context"]["batchscribe"])
    [api] = [
        f["Properties"]
        for f in resources(template_json, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == "lambdas.api.handler.handler"
    ]
    env = api["Environment"]["Variables"]
    assert env[ApiSettings.env_name("default_model")] == config.model
    assert env.get(ApiSettings.env_name("small_job_model")) == (config.cpu_model if config.cpu_pool else None)
