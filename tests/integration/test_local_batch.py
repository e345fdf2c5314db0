"""The local stack's Batch stand-in keeps Batch's books: a submit of N workers is one array job
with N children, each child one worker process; the parent stays PENDING until every child has
ended; and the scaler reads it through the same code it reads AWS Batch with (BatchCompute).
The workers here are tiny processes that wait for SIGTERM (exit 0) or SIGKILL (a crash)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchscribe.scaler import Pool, Workers, scale
from batchscribe.settings import WorkerSettings
from batchscribe_cli.local.batch import LocalCompute, report_exits
from lambdas.reconciler.handler import BatchJobDetail
from tests.e2e.waits import wait_until

# a worker that says it is ready, then runs until SIGTERM (exits 0, as an idle worker does)
WORKER = (
    "import pathlib, signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
    "pathlib.Path(sys.argv[1]).touch(); signal.pause()"
)
POOL = Pool(name="cpu", queue_url="q", max_workers=8, jobs_per_worker=1)


@pytest.fixture
def compute(tmp_path: Path) -> Iterator[tuple[LocalCompute, list[tuple[str, int]]]]:
    ended: list[tuple[str, int]] = []
    settings = WorkerSettings(table_name="t", bucket_name="b", jobs_queue_url="q")
    stand_in = LocalCompute(
        settings, {}, tmp_path, say=lambda _line: None, on_exit=lambda job_id, code: ended.append((job_id, code))
    )
    ready = tmp_path / "ready"
    ready.mkdir()

    def command(worker_id: str) -> tuple[list[str], dict[str, str] | None]:
        return [sys.executable, "-c", WORKER, str(ready / worker_id)], None

    stand_in.command = command  # type: ignore[method-assign]
    try:
        yield stand_in, ended
    finally:
        stand_in.stop_all(timeout=5)


def _children(compute: LocalCompute, parent: str, status: str) -> list[str]:
    return [j["jobId"] for j in compute.list_jobs(arrayJobId=parent, jobStatus=status)["jobSummaryList"]]


def _pid(compute: LocalCompute, job_id: str) -> int:
    proc = compute.jobs[job_id].proc
    assert proc is not None
    return proc.pid


def test_eight_workers_are_one_array_job_and_seven_exited_leave_one_active(
    compute: tuple[LocalCompute, list[tuple[str, int]]], tmp_path: Path
) -> None:
    """Given 8 workers started as one array job, when 7 exit idle and one runs on, then the
    parent is still PENDING with 7 children SUCCEEDED and 1 RUNNING, the scaler counts 1
    active worker and, with a backlog of 20, starts 7 more; when the last one crashes, the
    parent is FAILED (Batch: any child failed)."""
    stand_in, ended = compute
    assert [d.submitted for d in scale([POOL], lambda _pool: (8, 0), stand_in)] == [8]
    (parent,) = stand_in.list_jobs(jobQueue="", jobStatus="PENDING")["jobSummaryList"]
    children = _children(stand_in, parent["jobId"], "RUNNING")
    assert parent["arrayProperties"]["size"] == 8 and stand_in.started == 8
    assert children == [f"{parent['jobId']}:{i}" for i in range(8)]
    wait_until(lambda: all((tmp_path / "ready" / c).exists() for c in children), timeout=30, every=0.05)

    for child in children[:7]:
        os.kill(_pid(stand_in, child), signal.SIGTERM)
    # Batch's state is read through its API (the stand-in notices exits when asked, as the tick does)
    wait_until(lambda: len(_children(stand_in, parent["jobId"], "SUCCEEDED")) == 7, timeout=30, every=0.05)

    (described,) = stand_in.describe_jobs(jobs=[parent["jobId"]])["jobs"]
    assert described["status"] == "PENDING"
    assert described["arrayProperties"] == {"size": 8, "statusSummary": {"SUCCEEDED": 7, "RUNNING": 1}}
    assert _children(stand_in, parent["jobId"], "SUCCEEDED") == children[:7]
    assert sorted(ended) == [(c, 0) for c in children[:7]]  # each child reported with its own id
    assert stand_in.workers(POOL) == Workers(active=1)
    (decision,) = scale([POOL], lambda _pool: (20, 0), stand_in)
    assert (decision.active, decision.submitted) == (1, 7)

    os.kill(_pid(stand_in, children[7]), signal.SIGKILL)
    wait_until(lambda: _children(stand_in, parent["jobId"], "FAILED") == children[7:], timeout=30, every=0.05)
    (described,) = stand_in.describe_jobs(jobs=[parent["jobId"]])["jobs"]
    assert described["status"] == "FAILED" and ended[-1] == (children[7], -signal.SIGKILL)
    assert stand_in.workers(POOL) == Workers(active=7)


def test_a_single_worker_is_a_plain_job_that_succeeds_when_it_exits(
    compute: tuple[LocalCompute, list[tuple[str, int]]], tmp_path: Path
) -> None:
    stand_in, ended = compute
    stand_in.submit(POOL, 1)
    (job,) = stand_in.list_jobs(jobQueue="", jobStatus="RUNNING")["jobSummaryList"]
    assert "arrayProperties" not in job and ":" not in job["jobId"]
    wait_until(lambda: (tmp_path / "ready" / job["jobId"]).exists(), timeout=30, every=0.05)
    os.kill(_pid(stand_in, job["jobId"]), signal.SIGTERM)
    succeeded = lambda: stand_in.list_jobs(jobQueue="", jobStatus="SUCCEEDED")["jobSummaryList"]  # noqa: E731
    wait_until(lambda: [j["jobId"] for j in succeeded()] == [job["jobId"]], timeout=30, every=0.05)
    assert ended == [(job["jobId"], 0)]
    assert stand_in.workers(POOL) == Workers(active=0)


def test_a_child_that_ends_reaches_the_reconciler_as_batch_reports_an_array_child() -> None:
    """The reconciler looks only at single jobs and array children (a parent's end is its
    children's); the stand-in's event for a child carries its index, as Batch's does."""
    events: list[dict[str, Any]] = []

    def reconciler(event: dict[str, Any], _context: Any) -> dict[str, int]:
        events.append(event)
        return {"requeued": 0, "failed": 0}

    worker_exited = report_exits(reconciler, say=lambda _line: None)
    worker_exited("abc:3", 0)
    worker_exited("single", 1)

    child, single = (BatchJobDetail.model_validate(e["detail"]) for e in events)
    assert (child.jobId, child.status, child.arrayProperties) == ("abc:3", "SUCCEEDED", {"index": 3})
    assert (single.jobId, single.status, single.arrayProperties) == ("single", "FAILED", None)
    assert child.worker_ended and single.worker_ended
