"""The scaler's decision (pure, and with a fake compute) and its AWS Batch backend: counting
array children, moving work Spot cannot start (moto's Batch, and botocore's Stubber for what
moto does not model: pages, listings that carry a status summary)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from batchscribe import aws
from batchscribe.scaler import (
    ACTIVE_BATCH_STATUSES,
    ENDED_BATCH_STATUSES,
    STUCK_REASON,
    BatchCompute,
    Pool,
    Workers,
    active_children,
    plan,
    scale,
    start_hold,
)
from batchscribe.settings import WorkerSettings
from batchscribe_cli.local import LocalCompute


@pytest.mark.parametrize(
    ("visible", "in_flight", "active", "cap", "per", "expected"),
    [
        (0, 0, 0, 10, 4, 0),
        (1, 0, 0, 10, 4, 1),
        (4, 0, 0, 10, 4, 1),
        (5, 0, 0, 10, 4, 2),
        (100, 0, 0, 10, 4, 10),
        (100, 0, 3, 10, 4, 7),
        (3, 0, 0, 0, 4, 0),
        (20, 0, 0, 2, 1, 2),
        # no worker running: messages in flight (a worker ended holding them) are backlog
        (0, 3, 0, 10, 4, 1),
        (2, 3, 0, 10, 4, 2),
        # running workers hold what is in flight; their free slots take visible messages first
        (0, 8, 2, 10, 4, 0),
        (8, 0, 2, 10, 4, 0),
        (9, 0, 2, 10, 4, 1),
        (3, 6, 2, 10, 4, 1),  # 2 free slots for 3 visible
        (0, 11, 2, 10, 4, 1),  # 3 in flight beyond what 2 workers hold
    ],
)
def test_plan(visible: int, in_flight: int, active: int, cap: int, per: int, expected: int) -> None:
    pool = Pool(name="p", queue_url="q", max_workers=cap, jobs_per_worker=per)
    assert plan(visible, in_flight, active, pool) == expected


def test_plan_counts_a_running_workers_held_jobs_as_served() -> None:
    """The case a new user met: one CPU worker (K 4, one job per worker wanted) holds a long
    file and a short job, nothing visible: the old count (2 in flight / 1 per worker - 1 active)
    started a worker every tick that found nothing and exited idle. Now none starts; a new short
    job while the worker has a free slot starts none either; only more than its free slots do."""
    pool = Pool(name="cpu", queue_url="q", max_workers=4, jobs_per_worker=1, held_jobs=4)

    assert plan(visible=0, in_flight=2, active=1, pool=pool) == 0
    assert plan(visible=1, in_flight=1, active=1, pool=pool) == 0
    assert plan(visible=2, in_flight=2, active=1, pool=pool) == 0
    assert plan(visible=3, in_flight=2, active=1, pool=pool) == 1
    assert plan(visible=6, in_flight=4, active=1, pool=pool) == 3  # cap 4
    assert plan(visible=9, in_flight=4, active=1, pool=pool) == 3


def test_scale_starts_no_worker_for_jobs_a_running_worker_holds() -> None:
    pool = Pool(name="cpu", queue_url="q-cpu", max_workers=4, jobs_per_worker=1, held_jobs=4)
    compute = FakeCompute({"cpu": 1})

    held = scale([pool], lambda _p: (0, 2), compute)  # it holds a long file and a short job
    claimed_one_more = scale([pool], lambda _p: (1, 2), compute)  # a new job, a slot free

    assert compute.submitted == []
    assert [d.submitted for d in held + claimed_one_more] == [0, 0]
    # no worker running and a job visible: one starts
    assert scale([pool], lambda _p: (1, 0), FakeCompute({}))[0].submitted == 1


class FakeCompute:
    def __init__(self, active: dict[str, int]) -> None:
        self.running = dict(active)
        self.submitted: list[tuple[str, int]] = []

    def workers(self, pool: Pool) -> Workers:
        return Workers(active=self.running.get(pool.name, 0))

    def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
        self.submitted.append((pool.name, count))
        self.running[pool.name] = self.running.get(pool.name, 0) + count

    def cancel(self, job_ids: Sequence[str], reason: str) -> None:
        raise AssertionError("nothing is stuck")


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


def _compute_environment(batch: Any, name: str, kind: str, network: dict[str, Any]) -> str:
    return str(
        batch.create_compute_environment(
            computeEnvironmentName=name,
            type="MANAGED",
            state="ENABLED",
            serviceRole=network["role"],
            computeResources={
                "type": kind,
                "minvCpus": 0,
                "maxvCpus": 16,
                "instanceTypes": ["g4dn.xlarge"],
                "subnets": [network["subnet"]],
                "securityGroupIds": [network["sg"]],
                "instanceRole": network["profile"],
                "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED" if kind == "SPOT" else "BEST_FIT_PROGRESSIVE",
            },
        )["computeEnvironmentArn"]
    )


def _batch_env() -> dict[str, Any]:
    """A pool's Batch layout as the stack deploys it with Spot: the pool's job queue (Spot
    first, on-demand as the fallback) and an on-demand-only queue on the same on-demand
    environment, for the work the scaler moves."""
    ec2 = boto3.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    iam = boto3.client("iam")
    network = {
        "subnet": ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"],
        "sg": ec2.create_security_group(GroupName="w", Description="w", VpcId=vpc)["GroupId"],
        "role": iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"],
        "profile": iam.create_instance_profile(InstanceProfileName="ecs")["InstanceProfile"]["Arn"],
    }
    batch = boto3.client("batch")
    spot = _compute_environment(batch, "gpu-spot", "SPOT", network)
    on_demand = _compute_environment(batch, "gpu-on-demand", "EC2", network)
    queue = batch.create_job_queue(
        jobQueueName="gpu",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": spot},
            {"order": 2, "computeEnvironment": on_demand},
        ],
    )["jobQueueArn"]
    on_demand_queue = batch.create_job_queue(
        jobQueueName="gpu-on-demand",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": on_demand}],
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
    return {"queue": queue, "on_demand_queue": on_demand_queue, "jobdef": jobdef}


@pytest.fixture
def moto_batch() -> Iterator[dict[str, Any]]:
    """moto's Batch without Docker (a job goes straight to SUCCEEDED unless a test sets its
    state, `_set`), with a pool's two job queues."""
    with mock_aws(config={"batch": {"use_docker": False}}):
        aws.reset()
        yield _batch_env()
        aws.reset()


def _moto_job(job_id: str) -> Any:
    from moto.batch.models import batch_backends
    from moto.core import DEFAULT_ACCOUNT_ID

    return batch_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]._jobs[job_id]


def _set(job_id: str, status: str, age_seconds: float = 0) -> None:
    """Put one of moto's jobs in `status`, created `age_seconds` ago (moto runs nothing)."""
    job = _moto_job(job_id)
    job.status = status
    job.job_stopped = status in ENDED_BATCH_STATUSES
    job.job_created_at -= timedelta(seconds=age_seconds)


def _jobs(queue: str) -> list[dict[str, Any]]:
    """Every job in the queue (moto lists array children by queue too), any status."""
    batch = boto3.client("batch")
    found = {}
    for status in (*ACTIVE_BATCH_STATUSES, *ENDED_BATCH_STATUSES):
        for job in batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]:
            found[job["jobId"]] = job
    return [found[i] for i in sorted(found)]


def _parents(queue: str) -> list[dict[str, Any]]:
    ids = [j["jobId"] for j in _jobs(queue) if ":" not in j["jobId"]]
    return boto3.client("batch").describe_jobs(jobs=ids)["jobs"] if ids else []


def test_batch_compute_submits_one_array_job_and_counts_workers(moto_batch: dict[str, Any]) -> None:
    env = moto_batch
    pool = Pool(name="gpu", queue_url="q", max_workers=10, job_queue=env["queue"], job_definition=env["jobdef"])
    compute = BatchCompute(name_prefix="bs-worker")

    compute.submit(pool, 3)
    compute.submit(pool, 1)

    described = _parents(env["queue"])
    assert sorted(j.get("arrayProperties", {}).get("size", 1) for j in described) == [1, 3]
    assert all(j["jobDefinition"] == env["jobdef"] and j["jobName"].startswith("bs-worker-gpu-") for j in described)
    # moto without Docker runs jobs straight to SUCCEEDED: once they have ended, none is active
    assert compute.workers(pool) == Workers(active=0)


def test_seven_of_eight_exited_counts_one_and_the_backlog_gets_seven_more(moto_batch: dict[str, Any]) -> None:
    """Given 8 workers submitted as one array job, 7 of them exited idle (SUCCEEDED) and one
    still running a long job, so the parent is still PENDING (Batch ends a parent only when
    every child has), when 20 jobs arrive, then the scaler counts 1 active worker, not the
    array's size, and starts 7 more (the cap is 8)."""
    env = moto_batch
    pool = Pool(
        name="gpu",
        queue_url="q",
        max_workers=8,
        jobs_per_worker=1,
        job_queue=env["queue"],
        job_definition=env["jobdef"],
    )
    compute = BatchCompute(name_prefix="bs-worker")
    compute.submit(pool, 8)
    (parent,) = _parents(env["queue"])
    _set(parent["jobId"], "PENDING")
    _set(f"{parent['jobId']}:5", "RUNNING")  # the others SUCCEEDED

    assert _parents(env["queue"])[0]["arrayProperties"]["statusSummary"]["RUNNING"] == 1
    assert compute.workers(pool) == Workers(active=1)
    (decision,) = scale([pool], lambda _pool: (20, 0), compute)

    assert (decision.active, decision.submitted) == (1, 7)
    sizes = sorted(j.get("arrayProperties", {}).get("size", 1) for j in _parents(env["queue"]))
    assert sizes == [7, 8]


def test_a_parent_ends_as_its_children_do_in_moto(moto_batch: dict[str, Any]) -> None:
    """What the counting relies on in moto's model: a parent's statusSummary counts its
    children by status, and the parent is SUCCEEDED once all of them are."""
    env = moto_batch
    pool = Pool(name="gpu", queue_url="q", max_workers=3, job_queue=env["queue"], job_definition=env["jobdef"])
    BatchCompute(name_prefix="bs-worker").submit(pool, 3)
    (parent,) = _parents(env["queue"])
    assert parent["status"] == "SUCCEEDED" and parent["arrayProperties"]["statusSummary"]["SUCCEEDED"] == 3
    assert sorted(j["jobId"] for j in _jobs(env["queue"]) if ":" in j["jobId"]) == [
        f"{parent['jobId']}:{i}" for i in range(3)
    ]


def test_workers_stuck_runnable_on_spot_move_to_the_on_demand_queue(moto_batch: dict[str, Any]) -> None:
    """Given a pool with an on-demand queue, 3 workers of an array and a single worker that
    have waited RUNNABLE past the fallback time (Spot has no capacity), a RUNNABLE child and a
    single worker that have not waited that long, and one RUNNING child, when the scaler runs
    with a backlog, then it cancels exactly the 4 stuck ones and submits what the backlog needs
    besides the 3 workers left, to the on-demand queue."""
    env = moto_batch
    pool = Pool(
        name="gpu",
        queue_url="q",
        max_workers=10,
        jobs_per_worker=1,
        job_queue=env["queue"],
        job_definition=env["jobdef"],
        on_demand_job_queue=env["on_demand_queue"],
    )
    compute = BatchCompute(name_prefix="bs-worker", fallback_after=600)
    compute.submit(pool, 5)
    compute.submit(pool, 1)
    array, single = sorted(_parents(env["queue"]), key=lambda j: j.get("arrayProperties", {}).get("size", 1))[::-1]
    compute.submit(pool, 1)
    (young,) = [j for j in _parents(env["queue"]) if j["jobId"] not in (array["jobId"], single["jobId"])]
    _set(young["jobId"], "RUNNABLE", age_seconds=60)  # submitted a minute ago
    for job_id in (array["jobId"], single["jobId"]):
        _set(job_id, "PENDING" if job_id == array["jobId"] else "RUNNABLE", age_seconds=700)
    for i in range(3):
        _set(f"{array['jobId']}:{i}", "RUNNABLE", age_seconds=700)
    _set(f"{array['jobId']}:3", "RUNNABLE", age_seconds=60)  # spawned later: not stuck yet
    _set(f"{array['jobId']}:4", "RUNNING", age_seconds=700)
    stuck = {single["jobId"], *(f"{array['jobId']}:{i}" for i in range(3))}

    assert set(compute.workers(pool).stuck) == stuck
    (decision,) = scale([pool], lambda _pool: (8, 0), compute)

    assert (decision.active, decision.moved, decision.submitted) == (3, 4, 5)
    others = {young["jobId"], *(f"{array['jobId']}:{i}" for i in (3, 4))}
    cancelled = {j for j in stuck | others if _moto_job(j).stop}
    assert cancelled == stuck
    assert all(_moto_job(j).job_stopped_reason == STUCK_REASON for j in stuck)
    moved = [j.get("arrayProperties", {}).get("size", 1) for j in _parents(env["on_demand_queue"])]
    assert moved == [5]  # backlog 8, one job per worker: 8 - 3 still active


class Recording(FakeCompute):
    def __init__(self, seen: Workers) -> None:
        super().__init__({})
        self.seen = seen
        self.calls: list[tuple[str, Any]] = []

    def workers(self, pool: Pool) -> Workers:
        return self.seen

    def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
        self.calls.append(("submit", (count, on_demand)))

    def cancel(self, job_ids: Sequence[str], reason: str) -> None:
        self.calls.append(("cancel", tuple(job_ids)))


def test_while_the_pool_has_on_demand_workers_new_ones_go_on_demand_too() -> None:
    """Spot could not start this pool's workers a while ago (some run on its on-demand queue
    now): new workers go straight there rather than wait out the fallback time again; with
    none there, they go to the Spot-first queue."""
    pool = Pool(name="gpu", queue_url="q", max_workers=10, jobs_per_worker=1)
    for seen, expected in ((Workers(active=2, on_demand=2), True), (Workers(active=2), False)):
        compute = Recording(seen)
        scale([pool], lambda _pool: (5, 0), compute)
        assert compute.calls == [("submit", (3, expected))]
    compute = Recording(Workers(active=3, stuck=("a:0", "b")))
    (decision,) = scale([pool], lambda _pool: (5, 0), compute)
    assert compute.calls == [("cancel", ("a:0", "b")), ("submit", (4, True))]
    assert (decision.active, decision.moved, decision.submitted) == (1, 2, 4)


def test_no_fallback_without_an_on_demand_queue(moto_batch: dict[str, Any]) -> None:
    """An on-demand-only deployment has no second queue: a RUNNABLE worker is left waiting."""
    env = moto_batch
    pool = Pool(name="gpu", queue_url="q", max_workers=2, job_queue=env["queue"], job_definition=env["jobdef"])
    compute = BatchCompute(name_prefix="bs-worker", fallback_after=600)
    compute.submit(pool, 1)
    (single,) = _parents(env["queue"])
    _set(single["jobId"], "RUNNABLE", age_seconds=3600)

    assert compute.workers(pool) == Workers(active=1)
    assert scale([pool], lambda _pool: (4, 0), compute)[0].moved == 0
    assert not _moto_job(single["jobId"]).stop


def _summary(job_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"jobId": job_id, "jobName": f"bs-worker-gpu-{job_id}", "status": status, "createdAt": 1, **extra}


def test_batch_compute_reads_every_page_and_describes_only_what_the_listing_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batch's ListJobs answers in pages (nextToken): every page of every active status counts,
    a job that moved on between two pages counts once, other names and array children listed
    by queue are left out, a parent's statusSummary is read from the listing when there, and
    DescribeJobs (one call for up to 100 ids) asks only for the rest. Real request and response
    shapes: botocore's Stubber checks both against the service model."""
    batch = boto3.client("batch", region_name="us-east-1")
    stub = Stubber(batch)
    listed = {
        "PENDING": [
            [_summary("p", "PENDING", arrayProperties={"size": 8, "statusSummary": {"SUCCEEDED": 7, "RUNNING": 1}})],
            [_summary("q", "PENDING", arrayProperties={"size": 4})],  # page 2: no summary in this listing
        ],
        "RUNNING": [
            [_summary("p:3", "RUNNING", arrayProperties={"index": 3}), _summary("s", "RUNNING")],
            [{"jobId": "x", "jobName": "someone-else", "status": "RUNNING"}],
        ],
        "STARTING": [[_summary("s", "STARTING")]],  # moved on to RUNNING between two calls
    }
    for status in ACTIVE_BATCH_STATUSES:
        pages = listed.get(status, [[]])
        for n, jobs in enumerate(pages):
            request = {"jobQueue": "jq", "jobStatus": status, **({"nextToken": f"t{n}"} if n else {})}
            response = {"jobSummaryList": jobs, **({"nextToken": f"t{n + 1}"} if n + 1 < len(pages) else {})}
            stub.add_response("list_jobs", response, request)
    detail = {"jobQueue": "jq", "startedAt": 1, "jobDefinition": "jd"}
    described = {
        "jobs": [
            {**_summary("q", "PENDING"), **detail, "arrayProperties": {"size": 4, "statusSummary": {"FAILED": 1}}},
            {**_summary("s", "RUNNING"), **detail},
        ]
    }
    stub.add_response("describe_jobs", described, {"jobs": ["q", "s"]})
    monkeypatch.setattr(aws, "client", lambda _name: batch)
    with stub:
        workers = BatchCompute("bs-worker").workers(Pool(name="gpu", queue_url="q", max_workers=1, job_queue="jq"))
        stub.assert_no_pending_responses()
    assert workers == Workers(active=1 + 3 + 1)


def test_active_children_counts_what_has_not_ended() -> None:
    assert active_children({"size": 8, "statusSummary": {"SUCCEEDED": 7, "RUNNING": 1}}) == 1
    assert active_children({"size": 8, "statusSummary": {}}) == 8  # just submitted: no child reported yet
    assert active_children({"size": 3, "statusSummary": {"FAILED": 1, "SUCCEEDED": 2}}) == 0
    assert active_children({"statusSummary": {"RUNNABLE": 2, "SUCCEEDED": 5}}) == 2


def test_local_compute_starts_nothing_once_stopping(tmp_path: Path) -> None:
    """The local stack stops its workers while a scaler tick may still be under way: a submit
    that lands after stop_all starts no worker (it would outlive the stack)."""
    settings = WorkerSettings(table_name="t", bucket_name="b", jobs_queue_url="q")
    compute = LocalCompute(settings, {}, tmp_path, say=lambda _line: None)
    pool = Pool(name="cpu", queue_url="q", max_workers=2)
    compute.stop_all()
    compute.submit(pool, 2)
    assert compute.jobs == {} and compute.started == 0 and compute.active(pool) == 0


# ---- workers that cannot start hold their pool back -----------------------------------------


@pytest.mark.parametrize(
    ("stopped", "now", "expected"),
    [
        ([], 1000, 0),  # none failed
        ([1000], 1000, 60),  # one just now: the base
        ([1000], 1030, 30),
        ([1000], 1061, 0),  # its wait has passed
        ([900, 1000], 1000, 120),  # two: doubled, from the last
        ([700, 800, 900, 1000], 1000, 480),
        ([100 * i for i in range(20)], 1900, 1800),  # many: at most the cap
        ([1000 - 3601, 1000], 1000, 60),  # one older than the look-back (twice the cap) is forgotten
    ],
)
def test_start_hold(stopped: list[float], now: float, expected: float) -> None:
    assert start_hold(stopped, now, base=60, most=1800) == pytest.approx(expected)


def test_a_held_pool_starts_no_worker_and_says_how_long() -> None:
    pool = Pool(name="gpu", queue_url="q", max_workers=4, jobs_per_worker=1)
    held = Recording(Workers(active=0, held_seconds=95.0, failed_starts=2))
    (decision,) = scale([pool], lambda _pool: (3, 0), held)
    assert held.calls == [] and (decision.submitted, decision.held_seconds) == (0, 95.0)
    free = Recording(Workers(active=0))
    (decision,) = scale([pool], lambda _pool: (3, 0), free)
    assert free.calls == [("submit", (3, False))] and decision.held_seconds == 0


def test_batch_compute_counts_the_workers_that_could_not_start_by_their_exit_codes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One filtered ListJobs per job queue (created within the look-back, any status): a single
    worker that exited 69 counts, one that exited 1 (a crash) or 0 does not, nor another stack's;
    an array parent with failed children has them listed (FAILED) and each one's exit code read.
    Real request and response shapes: botocore's Stubber checks them against the service model."""
    now = 1_800_000_000.0
    ms = int(now * 1000)
    batch = boto3.client("batch", region_name="us-east-1")
    stub = Stubber(batch)
    for status in ACTIVE_BATCH_STATUSES:
        stub.add_response("list_jobs", {"jobSummaryList": []}, {"jobQueue": "jq", "jobStatus": status})
    recent = [
        _summary("a", "FAILED", stoppedAt=ms - 20_000, container={"exitCode": 69}),
        _summary("b", "FAILED", stoppedAt=ms - 30_000, container={"exitCode": 1}),
        _summary("c", "SUCCEEDED", stoppedAt=ms - 40_000, container={"exitCode": 0}),
        {**_summary("d", "FAILED", stoppedAt=ms - 10_000, container={"exitCode": 69}), "jobName": "other-gpu-1"},
        _summary("p", "PENDING", arrayProperties={"size": 3, "statusSummary": {"FAILED": 2, "RUNNING": 1}}),
    ]
    after = {"name": "AFTER_CREATED_AT", "values": [str(ms - 3600 * 1000)]}
    stub.add_response("list_jobs", {"jobSummaryList": recent}, {"jobQueue": "jq", "filters": [after]})
    children = [
        _summary("p:0", "FAILED", stoppedAt=ms - 5_000, container={"exitCode": 70}, arrayProperties={"index": 0}),
        _summary("p:1", "FAILED", stoppedAt=ms - 50_000, container={"exitCode": 137}, arrayProperties={"index": 1}),
    ]
    stub.add_response("list_jobs", {"jobSummaryList": children}, {"arrayJobId": "p", "jobStatus": "FAILED"})
    monkeypatch.setattr(aws, "client", lambda _name: batch)
    with stub:
        compute = BatchCompute("bs-worker", clock=lambda: now, backoff=(60, 1800))
        workers = compute.workers(Pool(name="gpu", queue_url="q", max_workers=1, job_queue="jq"))
        stub.assert_no_pending_responses()
    # two could not start (a at -20 s, p:0 at -5 s): 120 s from the last
    assert (workers.failed_starts, workers.held_seconds) == (2, pytest.approx(115.0))


class Exiting(LocalCompute):
    """The stand-in with workers that only exit with `code`."""

    def __init__(self, code: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.code = code

    def command(self, worker_id: str) -> tuple[list[str], dict[str, str] | None]:
        return [sys.executable, "-c", f"raise SystemExit({self.code})"], None


def test_the_local_stand_in_holds_a_pool_whose_workers_exit_69(tmp_path: Path) -> None:
    """The Batch stand-in records each worker's exit code as Batch does: after a worker exits 69
    (its GPU failed the preflight), the scaler starts no other for the back-off; one that exits 0
    holds nothing back."""
    settings = WorkerSettings(table_name="t", bucket_name="b", jobs_queue_url="q")
    lines: list[str] = []
    compute = Exiting(69, settings, {}, tmp_path, say=lines.append, backoff=(60, 1800))
    pool = Pool(name="gpu", queue_url="q", max_workers=2, job_queue="jq")

    scale([pool], lambda _pool: (1, 0), compute)
    for job in list(compute.jobs.values()):
        assert job.proc is not None
        job.proc.wait(30)
    (decision,) = scale([pool], lambda _pool: (1, 0), compute)
    assert compute.started == 1 and decision.submitted == 0 and 55 < decision.held_seconds <= 60
    assert any("exited with code 69" in line for line in lines)

    ok = Exiting(0, settings, {}, tmp_path, say=lines.append, backoff=(60, 1800))
    scale([pool], lambda _pool: (1, 0), ok)
    for job in list(ok.jobs.values()):
        assert job.proc is not None
        job.proc.wait(30)
    (decision,) = scale([pool], lambda _pool: (1, 0), ok)
    assert ok.started == 2 and decision.submitted == 1 and decision.held_seconds == 0
