"""The sweep index under heartbeats (issue 20): a beat does not move a running job's entry
(it holds the lease end rounded down to a bucket of half a lease, moved about once a bucket),
running jobs are spread over `RUNNING_SWEEP_SHARDS` partitions, and every sweep still acts
exactly: a lease is requeued once it has expired, never while it is live, whatever the index's
coarser time says. Each test runs on the table as declared (the sweep index carrying only
`INDEX_ATTRIBUTES`) and on one whose indexes carry every attribute (a CDK table made before that
declaration): the code must be right on both."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest

from batchscribe import aws
from batchscribe.lifecycle import Lifecycle, SweepCounts
from batchscribe.models import InputInfo, Job, JobMessage, JobOptions, JobStatus, Priority, iso
from batchscribe.repository.jobs import lease_bucket
from batchscribe.resources import RUNNING_SWEEP_SHARDS, SWEEP_INDEX
from batchscribe.settings import LifecycleSettings
from batchscribe_cli.provision import create_table
from bench.writes import WriteMeter, table_indexes
from tests.conftest import Stack
from tests.fakes import Clock
from tests.helpers import receive_all

LEASE = 90
BEAT = 5


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture(params=["declared", "all"])
def projections(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def svc(aws_stack: Stack, clock: Clock, projections: str) -> Lifecycle:
    settings = LifecycleSettings.from_env(aws_stack.env)
    if projections == "all":
        table = f"{aws_stack.table}-all-{uuid.uuid4().hex[:6]}"
        create_table(boto3.client("dynamodb"), table, attributes={})
        settings = settings.model_copy(update={"table_name": table})
    return Lifecycle.from_settings(settings, clock=clock)


def queued(svc: Lifecycle, n: int = 1, priority: Priority = "normal") -> list[str]:
    """`n` new jobs, queued now."""
    ids = []
    for _ in range(n):
        job_id, now = uuid.uuid4().hex, svc.clock()
        job = Job(
            job_id=job_id,
            owner="o",
            owner_key="k" * 32,
            status=JobStatus.PENDING,
            priority=priority,
            created_at=iso(now),
            updated_at=iso(now),
            upload_expires_at=now + 3600,
            input=InputInfo(
                key=f"uploads/k/{job_id}/input", filename="a.wav", content_type="audio/wav", declared_size=10
            ),
            options=JobOptions(),
            ttl=int(now) + 86400,
        )
        svc.repo.create(job)
        svc.repo.enqueue(job_id, 10)
        ids.append(job_id)
    return ids


def raw(svc: Lifecycle, job_id: str) -> dict[str, Any]:
    table = svc.repo.table_name
    return dict(boto3.client("dynamodb").get_item(TableName=table, Key={"job_id": {"S": job_id}})["Item"])


def sent(stack: Stack) -> list[str]:
    return [JobMessage.model_validate_json(m["Body"]).job_id for m in receive_all(stack.jobs_queue_url)]


def test_a_beat_moves_the_index_entry_only_when_the_lease_crosses_into_a_new_bucket(
    svc: Lifecycle, clock: Clock, projections: str
) -> None:
    """Five minutes of beats every 5 s (60 beats): the entry's key changes about once per
    bucket (45 s), never on the other beats; on the declared table those beats write no index
    entry at all; and the entry is never due while the worker beats."""
    [job_id] = queued(svc)
    job = svc.repo.claim(job_id, "w1", LEASE)
    meter = WriteMeter(
        aws.client("dynamodb"), boto3.client("dynamodb"), svc.repo.table_name, table_indexes(projections)
    )
    keys_seen, moves = [raw(svc, job_id)["sweep_at"]["N"]], 0
    for n in range(60):
        clock.now += BEAT
        with meter.step(f"beat{n}"):
            svc.repo.heartbeat(job_id, job.attempt, LEASE, n)
        item = raw(svc, job_id)
        assert float(item["sweep_at"]["N"]) <= float(item["lease_expires_at"]["N"])  # due no later than the lease
        assert float(item["sweep_at"]["N"]) > clock.now  # a beating worker's job is never due
        moved = item["sweep_at"]["N"] != keys_seen[-1]
        [write] = meter.writes[-1:]
        on_index = write.indexes[SWEEP_INDEX]
        if moved:
            moves += 1
            keys_seen.append(item["sweep_at"]["N"])
            assert on_index == 2  # delete + put: once a bucket
        else:
            assert on_index == (0 if projections == "declared" else 1)  # no move: the key is kept
    assert 300 / (LEASE / 2) - 1 <= moves <= 300 / (LEASE / 2) + 1
    assert svc.sweep() == SweepCounts()


def test_running_jobs_spread_over_the_shards_and_each_shard_is_swept(
    aws_stack: Stack, svc: Lifecycle, clock: Clock
) -> None:
    ids = queued(svc, 40)
    for job_id in ids:
        svc.repo.claim(job_id, "w1", LEASE)
    partitions = {raw(svc, job_id)["sweep_status"]["S"] for job_id in ids}
    assert partitions <= {f"running#{n}" for n in range(RUNNING_SWEEP_SHARDS)}
    assert len(partitions) >= RUNNING_SWEEP_SHARDS - 2  # 40 ids over 8 shards: hardly any empty

    clock.now += LEASE + 1
    assert svc.sweep() == SweepCounts(requeued=40)
    assert sorted(sent(aws_stack)) == sorted(ids)
    assert {svc.repo.get(job_id).status for job_id in ids} == {JobStatus.QUEUED}


def test_an_entry_due_before_its_lease_ends_is_left_alone_until_the_lease_has_passed(
    aws_stack: Stack, svc: Lifecycle, clock: Clock
) -> None:
    """The entry comes due at the bucket (up to half a lease early): the sweep reads the item,
    finds the lease live, and neither sends a message nor requeues; right after the exact
    lease end it does both."""
    [job_id] = queued(svc)
    clock.now += 30  # a lease end that is not on a bucket's edge
    start = clock.now
    svc.repo.claim(job_id, "gone", LEASE)
    lease = start + LEASE
    clock.now = lease - 0.5
    assert float(raw(svc, job_id)["sweep_at"]["N"]) == lease_bucket(lease, LEASE) < clock.now  # due in the index
    assert svc.sweep() == SweepCounts()
    assert sent(aws_stack) == [] and svc.repo.get(job_id).status is JobStatus.RUNNING

    clock.now = lease + 0.5
    assert svc.sweep() == SweepCounts(requeued=1)
    assert sent(aws_stack) == [job_id] and svc.repo.get(job_id).status is JobStatus.QUEUED


def test_a_lease_written_before_the_shards_is_still_swept(aws_stack: Stack, svc: Lifecycle, clock: Clock) -> None:
    """A deployed table's running jobs from before this layout sit in the unsharded `running`
    partition with the exact lease: the sweep reads that partition too."""
    [job_id] = queued(svc)
    svc.repo.claim(job_id, "old-worker", LEASE)
    boto3.client("dynamodb").update_item(
        TableName=svc.repo.table_name,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET sweep_status = :s, sweep_at = lease_expires_at",
        ExpressionAttributeValues={":s": {"S": "running"}},
    )
    clock.now += LEASE + 1
    assert svc.sweep() == SweepCounts(requeued=1)
    assert sent(aws_stack) == [job_id]


def test_a_worker_exit_requeues_its_own_jobs_in_every_shard(svc: Lifecycle) -> None:
    ids = queued(svc, 16)
    mine, theirs = ids[::2], ids[1::2]
    for job_id in ids:
        svc.repo.claim(job_id, "a" if job_id in mine else "b", LEASE)
    counts = svc.worker_exited("a")
    assert (counts.requeued, counts.failed) == (len(mine), 0)
    assert {svc.repo.get(j).status for j in mine} == {JobStatus.QUEUED}
    assert {svc.repo.get(j).status for j in theirs} == {JobStatus.RUNNING}


def test_queue_positions_still_come_from_the_index(svc: Lifecycle, clock: Clock) -> None:
    """`queued_ahead` reads the queued partition in wait order, filtered by priority: the index
    carries `priority`."""
    normal = []
    for _ in range(3):
        normal += queued(svc)
        clock.now += 1
    [high] = queued(svc, priority="high")
    assert [svc.repo.queued_ahead(j, "normal") for j in normal] == [0, 1, 2]
    assert svc.repo.queued_ahead(high, "high") == 0
