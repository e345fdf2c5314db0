"""Helpers of the worker tests: settings, a worker on a given engine, a submitted job, and a
runner with a hook before each batch (to inject faults mid-job)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3

from batchscribe.settings import Timings, WorkerSettings
from gpu_container.worker.batched import BatchRunner, runner_for
from gpu_container.worker.engines import Engine
from gpu_container.worker.main import Worker
from tests.conftest import Stack
from tests.helpers import call, create, deliver_uploads, post_upload


class Scripted:
    """A real engine whose batch runner calls a hook before each batch (to inject faults
    mid-job): the hook sees the batch and may raise, signal, cancel or take the job over."""

    def __init__(self, inner: Engine, hook: Callable[[Sequence[Any]], None]) -> None:
        self.inner, self.hook = inner, hook
        self.calls = 0

    def runner(self, engine: Engine) -> BatchRunner:
        inner = runner_for(engine)
        outer = self

        class Hooked:
            name, model_name, device = inner.name, inner.model_name, inner.device

            def run(self, batch: Sequence[Any]) -> list[Any]:
                outer.calls += 1
                outer.hook(batch)
                return inner.run(batch)

        return Hooked()


def worker_settings(stack: Stack, **over: Any) -> WorkerSettings:
    """Test settings; timing names in `over` change the worker's timings."""
    timings = {"idle_exit_seconds": 1, "poll_seconds": 0, "heartbeat_seconds": 0.2, "lease_seconds": 30}
    timings |= {k: over.pop(k) for k in list(over) if k in Timings.model_fields}
    base: dict[str, Any] = {
        "table_name": stack.table,
        "bucket_name": stack.bucket,
        "jobs_queue_url": stack.jobs_queue_url,
        "class_queue_urls": stack.class_queue_urls,
        "timings": Timings().replace(visibility_seconds=60, **timings),
        "worker_id": "test-worker",
    }
    return WorkerSettings(**{**base, **over})


def make_worker(stack: Stack, engine: Engine | Scripted, probe: Any = None, **over: Any) -> Worker:
    """A worker on `engine` (no model loading by name); a Scripted engine hooks its batches;
    `probe` stands for the GPU a device=cuda worker's preflight finds (tests.fake_gpu)."""
    if isinstance(engine, Scripted):
        scripted = engine
        return Worker(
            worker_settings(stack, **over),
            engine_loader=lambda _e, _m: scripted.inner,
            runner_factory=scripted.runner,
            probe=probe,
        )
    return Worker(worker_settings(stack, **over), engine_loader=lambda _engine, _model: engine, probe=probe)


def submit(stack: Stack, path: Path, content_type: str = "audio/wav", **options: Any) -> str:
    data = path.read_bytes()
    job = create(size=len(data), content_type=content_type, options=options or None)
    post_upload(job["upload"], data)
    deliver_uploads(stack)
    assert call("GET", f"/jobs/{job['job_id']}")[1]["status"] == "queued"
    return str(job["job_id"])


def s3_text(stack: Stack, key: str) -> str:
    return str(boto3.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read().decode())


def queue_counts(stack: Stack, url: str | None = None) -> tuple[int, int]:
    attrs = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url or stack.jobs_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def until_heard(worker: Worker, job_id: str, timeout: float = 30) -> None:
    """Wait (inside a batch hook) until the job's heartbeat has learned that it was cancelled or
    taken over, or the job is no longer held: no fixed sleep that a slow machine outlasts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = worker.held(job_id)
        if run is None or run.beat.interrupted:
            return
        time.sleep(0.02)
    raise AssertionError(f"the worker's heartbeat did not learn of job {job_id}'s change in {timeout} s")


def until_claimed(worker: Worker, jobs: int, timeout: float = 30) -> None:
    """Wait (inside a batch hook) until the worker has claimed `jobs` jobs: claiming runs on
    its own thread, beside the batches."""
    deadline = time.monotonic() + timeout
    while worker.jobs_done < jobs:
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker claimed {worker.jobs_done} of {jobs} jobs in {timeout} s")
        time.sleep(0.02)
