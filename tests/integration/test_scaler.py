"""The scaler's decision (pure, and with a fake compute) and its AWS Batch backend (moto)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchscribe import aws
from batchscribe.scaler import ACTIVE_BATCH_STATUSES, BatchCompute, Pool, plan, scale
from batchscribe.settings import WorkerSettings
from batchscribe_cli.local import LocalCompute


@pytest.mark.parametrize(
    ("backlog", "active", "cap", "per", "expected"),
    [
        (0, 0, 10, 4, 0),
        (1, 0, 10, 4, 1),
        (4, 0, 10, 4, 1),
        (5, 0, 10, 4, 2),
        (100, 0, 10, 4, 10),
        (100, 3, 10, 4, 7),
        (8, 5, 10, 4, 0),
        (3, 0, 0, 4, 0),
        (20, 0, 2, 1, 2),
    ],
)
def test_plan(backlog: int, active: int, cap: int, per: int, expected: int) -> None:
    assert plan(backlog, active, cap, per) == expected


class FakeCompute:
    def __init__(self, active: dict[str, int]) -> None:
        self.running = dict(active)
        self.submitted: list[tuple[str, int]] = []

    def active(self, pool: Pool) -> int:
        return self.running.get(pool.name, 0)

    def submit(self, pool: Pool, count: int) -> None:
        self.submitted.append((pool.name, count))
        self.running[pool.name] = self.running.get(pool.name, 0) + count


def test_scale_per_pool_from_visible_plus_in_flight() -> None:
    pools = [
        Pool(name="gpu", queue_url="q-gpu", max_workers=10, jobs_per_worker=4),
        Pool(name="cpu", queue_url="q-cpu", max_workers=2, jobs_per_worker=1),
    ]
    depths = {"q-gpu": (9, 3), "q-cpu": (5, 0)}
    compute = FakeCompute({"gpu": 1})

    decisions = scale(pools, lambda pool: depths[pool.queue_url], compute)

    assert compute.submitted == [("gpu", 2), ("cpu", 2)]
    assert [(d.pool, d.backlog, d.active, d.submitted) for d in decisions] == [
        ("gpu", 12, 1, 2),
        ("cpu", 5, 0, 2),
    ]
    # the next tick sees the workers it started and adds none
    assert [d.submitted for d in scale(pools, lambda pool: depths[pool.queue_url], compute)] == [0, 0]
    # an empty queue costs no compute look-up and starts nothing
    assert [d.submitted for d in scale(pools, lambda _u: (0, 0), compute)] == [0, 0]


def _batch_env() -> dict[str, Any]:
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="w", Description="w", VpcId=vpc)["GroupId"]
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    profile = iam.create_instance_profile(InstanceProfileName="ecs")["InstanceProfile"]["Arn"]
    batch = boto3.client("batch")
    ce = batch.create_compute_environment(
        computeEnvironmentName="gpu-spot",
        type="MANAGED",
        state="ENABLED",
        serviceRole=role,
        computeResources={
            "type": "SPOT",
            "minvCpus": 0,
            "maxvCpus": 16,
            "instanceTypes": ["g4dn.xlarge"],
            "subnets": [subnet],
            "securityGroupIds": [sg],
            "instanceRole": profile,
            "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
        },
    )["computeEnvironmentArn"]
    queue = batch.create_job_queue(
        jobQueueName="gpu",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )["jobQueueArn"]
    jobdef = batch.register_job_definition(
        jobDefinitionName="worker",
        type="container",
        containerProperties={
            "image": "worker:latest",
            "command": ["python", "-m", "gpu_container.worker"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "4"},
                {"type": "MEMORY", "value": "15000"},
                {"type": "GPU", "value": "1"},
            ],
        },
    )["jobDefinitionArn"]
    return {"queue": queue, "jobdef": jobdef}


def test_batch_compute_submits_one_array_job_and_counts_workers() -> None:
    with mock_aws(config={"batch": {"use_docker": False}}):
        aws.reset()
        env = _batch_env()
        pool = Pool(name="gpu", queue_url="q", max_workers=10, job_queue=env["queue"], job_definition=env["jobdef"])
        compute = BatchCompute(name_prefix="bs-worker")

        compute.submit(pool, 3)
        compute.submit(pool, 1)

        batch = boto3.client("batch")
        jobs = batch.list_jobs(jobQueue=env["queue"], filters=[{"name": "JOB_NAME", "values": ["bs-worker-gpu*"]}])
        parents = [j["jobId"] for j in jobs["jobSummaryList"] if ":" not in j["jobId"]]
        described = batch.describe_jobs(jobs=parents)["jobs"]
        sizes = sorted(j.get("arrayProperties", {}).get("size", 1) for j in described)
        assert sizes == [1, 3]
        assert all(j["jobDefinition"] == env["jobdef"] for j in described)
        # moto without Docker runs jobs straight to SUCCEEDED: once they finish, none is active
        deadline = time.time() + 20
        while compute.active(pool) and time.time() < deadline:
            time.sleep(0.5)
        assert compute.active(pool) == 0
        aws.reset()


def test_batch_compute_counts_array_sizes_over_every_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch's ListJobs answers in pages (nextToken): every page of every active status counts."""
    import boto3
    from botocore.stub import Stubber

    batch = boto3.client("batch", region_name="us-east-1")
    stub = Stubber(batch)
    for status in ACTIVE_BATCH_STATUSES:
        if status == "RUNNING":
            first = [
                {"jobId": "p", "jobName": "bs-worker-gpu-1", "arrayProperties": {"size": 3}},
                {"jobId": "p:0", "jobName": "bs-worker-gpu-1"},
            ]
            rest = [{"jobId": "b", "jobName": "bs-worker-gpu-2"}, {"jobId": "x", "jobName": "someone-else"}]
            stub.add_response(
                "list_jobs", {"jobSummaryList": first, "nextToken": "t2"}, {"jobQueue": "jq", "jobStatus": status}
            )
            stub.add_response(
                "list_jobs", {"jobSummaryList": rest}, {"jobQueue": "jq", "jobStatus": status, "nextToken": "t2"}
            )
        else:
            stub.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "jq", "jobStatus": status})
    monkeypatch.setattr(aws, "client", lambda _name: batch)
    with stub:
        assert BatchCompute("bs-worker").active(Pool(name="gpu", queue_url="q", max_workers=1, job_queue="jq")) == 4
        stub.assert_no_pending_responses()


def test_local_compute_starts_nothing_once_stopping(tmp_path: Path) -> None:
    """The local stack stops its workers while a scaler tick may still be under way: a submit
    that lands after stop_all starts no worker (it would outlive the stack)."""
    settings = WorkerSettings(table_name="t", bucket_name="b", jobs_queue_url="q")
    compute = LocalCompute(settings, {}, tmp_path, say=lambda _line: None)
    pool = Pool(name="cpu", queue_url="q", max_workers=2)
    compute.stop_all()
    compute.submit(pool, 2)
    assert compute.procs == {} and compute.started == 0 and compute.active(pool) == 0
