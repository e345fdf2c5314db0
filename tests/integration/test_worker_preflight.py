"""A worker proves its device and loads its engine before it claims anything (issue 21): a GPU
that fails its preflight (faked at its one seam, or this GPU-less machine's real driver check)
and an engine that does not load end the worker with their exit code and one line, no message
received, the job queued with no attempt spent; a job whose engine fails to load later stays
queued, unclaimed; a GPU pool never runs on the CPU, and `auto` says why it did.
moto, the real tiny.en model, espeak speech."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from batchscribe.models import JobStatus
from batchscribe.repository import JobRepository
from batchscribe.resources import WORKER_NOT_STARTED, WorkerExit
from gpu_container.worker.engines import Engine
from gpu_container.worker.main import Outcome, Worker
from tests.conftest import Stack
from tests.fake_gpu import R550, R570, FakeProbe
from tests.integration.workers import queue_counts, s3_text, submit, worker_settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def loader(engine: Engine, fails: dict[str, BaseException] | None = None) -> tuple[Callable[..., Engine], list[str]]:
    """An engine loader that records the models it was asked for, raising for those in `fails`."""
    asked: list[str] = []

    def load(_engine: str, model: str) -> Engine:
        asked.append(model)
        if model in (fails or {}):
            raise (fails or {})[model]
        return engine

    return load, asked


def worker_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """What the worker logged: level, message and the line's fields."""
    return [
        {**r.__dict__, "level": r.levelname, "message": r.getMessage()}
        for r in caplog.records
        if r.name == "batchscribe-worker"
    ]


def assert_never_received(stack: Stack, job_id: str) -> None:
    """The job is queued with no attempt spent, and its message was never received: the test's
    own receive is its first."""
    job = JobRepository(stack.table).get(job_id)
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 0)
    assert queue_counts(stack) == (1, 0)
    got = boto3.client("sqs").receive_message(
        QueueUrl=stack.jobs_queue_url, AttributeNames=["ApproximateReceiveCount"], VisibilityTimeout=0
    )["Messages"]
    assert [m["Attributes"]["ApproximateReceiveCount"] for m in got] == ["1"]


def test_a_gpu_that_fails_its_preflight_ends_the_worker_before_any_claim(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    job_id = submit(aws_stack, speech["wav"][0])
    load, asked = loader(engines["faster-whisper"])
    # an H100 under driver 550: CTranslate2 4.8.5 has only PTX for it, which that driver cannot compile
    worker = Worker(worker_settings(aws_stack, device="cuda"), engine_loader=load, probe=FakeProbe(driver=R550))

    assert worker.run() == WorkerExit.DEVICE == 69

    assert asked == []  # nothing loaded: no CPU fallback, no engine on a GPU that failed
    assert worker.jobs_done == 0 and worker.outcomes == []
    assert_never_received(aws_stack, job_id)
    lines = worker_lines(caplog)
    assert len(lines) == 1, lines  # the one line, nothing else
    line = lines[0]
    assert (line["level"], line["event"], line["exit_code"], line["check"]) == (
        "ERROR",
        WORKER_NOT_STARTED,
        69,
        "driver",
    )
    message = str(line["message"])
    assert message.startswith("worker not started: GPU preflight failed at driver: CTranslate2 4.8.5 carries no")
    assert "550.144.03 (CUDA 12.4)" in message and "What to do: use an AMI whose NVIDIA driver is 570" in message


def test_an_engine_that_does_not_load_ends_the_worker_before_any_claim(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    job_id = submit(aws_stack, speech["wav"][0])
    load, asked = loader(engines["faster-whisper"], {"tiny.en": RuntimeError("CUDA failed with error out of memory")})
    worker = Worker(worker_settings(aws_stack, device="cuda"), engine_loader=load, probe=FakeProbe(driver=R570))

    assert worker.run() == WorkerExit.ENGINE == 70

    assert asked == ["tiny.en"]
    assert_never_received(aws_stack, job_id)
    lines = worker_lines(caplog)
    said = [str(line["message"]) for line in lines if line["level"] != "ERROR"]
    # the preflight passed; the batches were sized (from GPU memory, or a T4's where no probe answers)
    assert [m for m in said if not m.startswith("batch size")] == ["GPU preflight passed"], said
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert [(e["event"], e["exit_code"], e["check"]) for e in errors] == [(WORKER_NOT_STARTED, 70, "engine")]
    assert "could not load the model tiny.en on cuda: RuntimeError: CUDA failed with error out of memory" in str(
        errors[0]["message"]
    )


def test_a_job_whose_engine_fails_to_load_stays_queued_with_no_attempt_spent(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    """The pool's own model loads; another model a job asks for does not (here: out of GPU
    memory). That job is never claimed: it stays queued at attempt 0, its message sent again
    for later as a fresh one (no receive towards the DLQ); the worker does not try that load
    again, and the other job runs."""
    big = submit(aws_stack, speech["wav"][0], model="large-v3")
    small = submit(aws_stack, speech["wav"][0])
    load, asked = loader(engines["faster-whisper"], {"large-v3": RuntimeError("CUDA failed with error out of memory")})
    worker = Worker(worker_settings(aws_stack), engine_loader=load)

    assert worker.run() == WorkerExit.DONE

    repo = JobRepository(aws_stack.table)
    assert repo.get(small).status is JobStatus.SUCCEEDED
    job = repo.get(big)
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 0)
    assert asked.count("large-v3") == 1
    assert Outcome.NO_ENGINE in worker.outcomes and Outcome.RETRY not in worker.outcomes
    attrs = boto3.client("sqs").get_queue_attributes(QueueUrl=aws_stack.jobs_queue_url, AttributeNames=["All"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "1"  # sent again, for later
    assert queue_counts(aws_stack) == (0, 0) and queue_counts(aws_stack, aws_stack.jobs_dlq_url) == (0, 0)


def test_auto_runs_on_the_cpu_when_the_gpu_fails_and_says_why(
    aws_stack: Stack, speech: dict[str, tuple[Path, str]], caplog: pytest.LogCaptureFixture
) -> None:
    job_id = submit(aws_stack, speech["wav"][0])
    worker = Worker(worker_settings(aws_stack, device="auto", max_jobs=1), probe=FakeProbe(driver=R550))
    assert worker.device == "cpu"

    assert worker.run() == WorkerExit.DONE  # the real loader: tiny.en, on the CPU

    job = JobRepository(aws_stack.table).get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.log_key is not None
    assert "device=cpu" in s3_text(aws_stack, job.log_key)
    chosen = [line for line in worker_lines(caplog) if line["message"] == "running on the CPU"]
    assert len(chosen) == 1
    assert str(chosen[0]["why"]).startswith("device=auto and no usable GPU: driver: CTranslate2 4.8.5 carries no")


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="this machine has an NVIDIA driver")
def test_the_worker_program_here_exits_with_the_preflight_code_and_one_line(tmp_path: Path) -> None:
    """The container's entrypoint with device=cuda on this GPU-less machine, the real probe: one
    line naming the missing driver, exit 69, and no AWS call (the endpoint is a closed port)."""
    settings = {
        "BATCHSCRIBE_TABLE_NAME": "jobs",
        "BATCHSCRIBE_BUCKET_NAME": "media",
        "BATCHSCRIBE_JOBS_QUEUE_URL": "http://127.0.0.1:9/000000000000/jobs",
        "BATCHSCRIBE_DEVICE": "cuda",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHSCRIBE_", "AWS_"))}
    aws = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "gpu_container.worker"],
        cwd=ROOT,
        env={**base, **aws, **settings, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == WorkerExit.DEVICE, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    line = json.loads(out)
    assert (line["event"], line["exit_code"], line["check"]) == (WORKER_NOT_STARTED, 69, "driver")
    assert "no NVIDIA driver: libcuda.so.1 cannot be loaded" in line["message"]
