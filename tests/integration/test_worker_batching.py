"""Cross-job batching in the worker: K jobs held at once, their windows in shared batches,
and every job keeping its own contract (claim, fencing attempt, cancel, failure code,
give-back, results). moto, the real tiny.en model, espeak speech."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import jiwer
import pytest
from botocore.exceptions import ClientError

from batchscribe.models import Job, JobStatus
from batchscribe.repository import JobRepository
from gpu_container.worker import batches as batches_module
from gpu_container.worker.engines import Engine
from gpu_container.worker.gpu_memory import MemoryInfo, MiB
from gpu_container.worker.main import Outcome, Worker
from harness.audio import SENTENCES, long_text, speak, spoken_words
from tests.conftest import Stack
from tests.e2e.waits import wait_until
from tests.fake_gpu import A10G, FakeProbe
from tests.helpers import call
from tests.integration.workers import (
    Scripted,
    make_worker,
    queue_counts,
    s3_text,
    submit,
    until_claimed,
    until_heard,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """Four different short recordings (one to two sentences each)."""
    d = tmp_path_factory.mktemp("voices")
    texts = [" ".join(SENTENCES[i : i + 2]) for i in (0, 3, 6, 9)]
    return [(speak(text, d / f"v{i}.wav"), text) for i, text in enumerate(texts)]


def slow_extensions(worker: Worker) -> None:
    """Heartbeat extensions of message visibility take a while to land (a slow SQS call), so
    one is often in flight when the worker gives a job back."""
    extend = worker.queue.extend

    def slow(receipt_handle: str, seconds: int) -> None:
        if seconds:
            time.sleep(0.05)
        extend(receipt_handle, seconds)

    worker.queue.extend = slow  # type: ignore[method-assign]


def jobs_per_batch(batches: list[Sequence[Any]]) -> list[int]:
    return [len({work.job for work in batch}) for batch in batches]


def test_k_jobs_share_batches_and_each_gets_its_own_transcript(
    aws_stack: Stack, voices: list[tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    ids = [submit(aws_stack, path) for path, _ in voices]
    batches: list[Sequence[Any]] = []
    hook = Scripted(engines["faster-whisper"], batches.append)

    worker = make_worker(aws_stack, hook, max_held_jobs=4, batch_size=8, max_jobs=4)
    assert worker.run() == 0

    assert max(jobs_per_batch(batches)) >= 2  # windows of different jobs ran together
    repo = JobRepository(aws_stack.table)
    for job_id, (_, spoken) in zip(ids, voices, strict=True):
        job = repo.get(job_id)
        assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)
        assert job.result is not None and job.result.compute_seconds > 0
        text = s3_text(aws_stack, job.result.outputs["txt"])
        # its own words, nobody else's
        assert jiwer.wer(spoken_words(spoken), spoken_words(text)) <= 0.3, (spoken, text)
    assert queue_counts(aws_stack) == (0, 0)


def test_a_poison_file_among_them_fails_alone_with_its_code(
    aws_stack: Stack, voices: list[tuple[Path, str]], speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    good = [submit(aws_stack, path) for path, _ in voices[:2]]
    poison = submit(aws_stack, speech["corrupt"][0])
    worker = make_worker(aws_stack, engines["faster-whisper"], max_held_jobs=3, max_jobs=3)
    worker.run()
    repo = JobRepository(aws_stack.table)
    failed = repo.get(poison)
    assert failed.status is JobStatus.FAILED and failed.error is not None
    assert failed.error.code == "invalid_media"
    assert [repo.get(i).status for i in good] == [JobStatus.SUCCEEDED] * 2
    assert queue_counts(aws_stack) == (0, 0)


def test_cancelling_one_job_leaves_the_others(
    aws_stack: Stack, voices: list[tuple[Path, str]], speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    long_id = submit(aws_stack, speech["long"][0])  # three windows
    others = [submit(aws_stack, path) for path, _ in voices[:2]]

    def cancel_the_long_one(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            assert call("POST", f"/jobs/{long_id}/cancel")[0] == 200
            until_heard(worker, long_id)  # the worker learns of it at a heartbeat

    hook = Scripted(engines["faster-whisper"], cancel_the_long_one)
    worker = make_worker(aws_stack, hook, max_held_jobs=3, batch_size=2, heartbeat_seconds=0.1, max_jobs=3)
    worker.run()

    repo = JobRepository(aws_stack.table)
    cancelled = repo.get(long_id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.result is None
    assert [repo.get(i).status for i in others] == [JobStatus.SUCCEEDED] * 2
    assert Outcome.CANCELLED in worker.outcomes
    assert queue_counts(aws_stack) == (0, 0)


def sigterm_at_the_first_batch(
    stack: Stack,
    voices: list[tuple[Path, str]],
    speech: dict[str, tuple[Path, str]],
    engines: dict[str, Engine],
    **over: Any,
) -> tuple[list[str], Worker]:
    """Three jobs (a long one first) and a worker, holding all three, that is sent SIGTERM as
    its first batch starts (not yet run; signal handlers installed)."""
    ids = [submit(stack, speech["long"][0]), *(submit(stack, p) for p, _ in voices[:2])]

    def sigterm(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            until_claimed(worker, 3)  # claims go on beside the loop: all three are held by now
            os.kill(os.getpid(), signal.SIGTERM)

    hook = Scripted(engines["faster-whisper"], sigterm)
    worker = make_worker(stack, hook, max_held_jobs=3, batch_size=1, idle_exit_seconds=600, **over)
    worker.install_signal_handlers()
    return ids, worker


@pytest.mark.usefixtures("restore_signals")
def test_sigterm_mid_batch_gives_every_unfinished_job_back(
    aws_stack: Stack, voices: list[tuple[Path, str]], speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    ids, worker = sigterm_at_the_first_batch(aws_stack, voices, speech, engines, heartbeat_seconds=0.01)
    slow_extensions(worker)  # a heartbeat's extension in flight as the give-back runs (the race CI once lost)
    assert worker.run() == 0

    repo = JobRepository(aws_stack.table)
    jobs = [repo.get(i) for i in ids]
    given_back = [j for j in jobs if j.attempt == 1]  # claimed before the signal (the rest: not yet)
    assert len(given_back) >= 1 and Outcome.GIVEN_BACK in worker.outcomes
    assert all(j.status is JobStatus.QUEUED and j.worker is None and j.attempt <= 1 for j in jobs), jobs
    assert queue_counts(aws_stack) == (3, 0)  # every message visible again at once
    # the next worker finishes all three
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=3).run()
    assert [repo.get(i).status for i in ids] == [JobStatus.SUCCEEDED] * 3


@pytest.mark.usefixtures("restore_signals")
def test_a_give_back_that_fails_does_not_keep_the_others_held(
    aws_stack: Stack, voices: list[tuple[Path, str]], speech: dict[str, tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    """DynamoDB refuses one job's give-back on the way out: the other jobs still go back, and
    that job's message is visible again too (its lease runs out; then it is claimable)."""
    ids, worker = sigterm_at_the_first_batch(aws_stack, voices, speech, engines, lease_seconds=2)
    give_back = worker.repo.give_back

    def refused_for_the_first(job_id: str, attempt: int) -> Job:
        if job_id == ids[0]:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "UpdateItem")
        return give_back(job_id, attempt)

    worker.repo.give_back = refused_for_the_first  # type: ignore[method-assign]
    assert worker.run() == 0

    repo = JobRepository(aws_stack.table)
    assert [repo.get(i).status for i in ids] == [JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.QUEUED]
    assert worker.outcomes.count(Outcome.GIVEN_BACK) == 3
    assert queue_counts(aws_stack) == (3, 0)
    expires = repo.get(ids[0]).lease_expires_at
    assert expires is not None
    wait_until(lambda: time.time() > expires + 0.1, timeout=10)  # the refused job's lease runs out
    make_worker(aws_stack, engines["faster-whisper"], max_jobs=3).run()
    assert [repo.get(i).status for i in ids] == [JobStatus.SUCCEEDED] * 3


def test_a_stale_attempts_commit_is_refused_for_that_job_only(
    aws_stack: Stack, voices: list[tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    ids = [submit(aws_stack, path) for path, _ in voices[:3]]
    later = JobRepository(aws_stack.table, clock=lambda: time.time() + 3600)  # leases look expired

    def take_over_one(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            later.claim(ids[1], "worker-b", lease_seconds=300)

    hook = Scripted(engines["faster-whisper"], take_over_one)
    make_worker(aws_stack, hook, max_held_jobs=3, batch_size=8, max_jobs=3).run()

    repo = JobRepository(aws_stack.table)
    taken = repo.get(ids[1])
    assert (taken.status, taken.attempt, taken.worker, taken.result) == (JobStatus.RUNNING, 2, "worker-b", None)
    assert [repo.get(i).status for i in (ids[0], ids[2])] == [JobStatus.SUCCEEDED] * 2


def test_one_at_a_time_is_k_equals_one(
    aws_stack: Stack, voices: list[tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    for path, _ in voices[:2]:
        submit(aws_stack, path)
    batches: list[Sequence[Any]] = []
    make_worker(aws_stack, Scripted(engines["faster-whisper"], batches.append), max_held_jobs=1, max_jobs=2).run()
    assert batches and max(jobs_per_batch(batches)) == 1


def test_the_log_is_written_while_the_attempt_runs(
    aws_stack: Stack, voices: list[tuple[Path, str]], engines: dict[str, Engine]
) -> None:
    """Heartbeats flush the job's log, so an attempt that is killed still leaves its lines
    (tests/e2e: a SIGKILLed worker's attempt is in the final log)."""
    job_id = submit(aws_stack, voices[0][0])
    record = JobRepository(aws_stack.table).get(job_id)
    key = f"outputs/{record.owner_key}/{job_id}/log.txt"
    seen: list[str] = []

    def read_log_mid_job(_batch: Sequence[Any]) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a heartbeat flushes the log
            with contextlib.suppress(ClientError):  # not written yet
                text = boto3.client("s3").get_object(Bucket=aws_stack.bucket, Key=key)["Body"].read().decode()
                if "opened" in text:
                    seen.append(text)
                    return
            time.sleep(0.05)

    make_worker(
        aws_stack, Scripted(engines["faster-whisper"], read_log_mid_job), heartbeat_seconds=0.1, max_jobs=1
    ).run()
    assert seen and all(line in seen[0] for line in ("attempt 1 on worker test-worker", "downloaded", "opened"))
    assert "succeeded" not in seen[0]  # read before the commit


def test_a_batch_out_of_gpu_memory_is_halved_and_the_job_completes(
    aws_stack: Stack,
    engines: dict[str, Engine],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OOM injected: the runner raises CTranslate2's own out-of-memory error for any batch of more
    than 3 windows. The worker halves B (the first batch: the file's 6 windows), runs the same
    windows again at the new size and keeps it, logs it once; the job succeeds on its first
    attempt, with its words."""
    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)  # every window ready for batch 1
    text = long_text(150)
    job_id = submit(aws_stack, speak(text, tmp_path / "long.wav"))
    sizes: list[int] = []

    def out_of_memory_above_three(batch: Sequence[Any]) -> None:
        sizes.append(len(batch))
        if len(batch) > 3:
            raise RuntimeError("CUDA failed with error out of memory")

    hook = Scripted(engines["faster-whisper"], out_of_memory_above_three)
    worker = make_worker(aws_stack, hook, max_held_jobs=1, batch_size=8, max_jobs=1)
    with caplog.at_level(logging.WARNING):
        assert worker.run() == 0

    job = JobRepository(aws_stack.table).get(job_id)
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)
    assert job.result is not None
    assert jiwer.wer(spoken_words(text), spoken_words(s3_text(aws_stack, job.result.outputs["txt"]))) <= 0.3
    assert sizes == [6, 3, 3]  # the same windows again, 3 at a time; never one by one
    assert worker.batches.size(("faster-whisper", "tiny.en")) == 3 and worker.batch_size == 8
    halved = [r for r in caplog.records if r.getMessage() == "out of GPU memory: batch size halved"]
    assert [tuple(vars(r)[k] for k in ("batch_size_was", "batch_size", "windows")) for r in halved] == [(8, 3, 6)]


def test_a_gpu_worker_sizes_its_batches_from_memory_unless_told(
    aws_stack: Stack, engines: dict[str, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA, B comes from the card's free memory (a T4's when no probe answers) and the model;
    the worker's `batch_size` setting, when given, wins. K stays the worker's default."""
    a10g = MemoryInfo(free=23_028 * MiB, total=23_028 * MiB, source="nvml")
    gpu = FakeProbe(device=A10G)  # its preflight passes (this machine has no GPU to prove)
    monkeypatch.setattr(batches_module, "free_memory", lambda: a10g)
    measured = make_worker(aws_stack, engines["faster-whisper"], probe=gpu, device="cuda", model="large-v3")
    assert (measured.max_held, measured.batch_size, measured.batches.batch_size) == (32, 24, 24)
    told = make_worker(aws_stack, engines["faster-whisper"], probe=gpu, device="cuda", model="large-v3", batch_size=5)
    assert (told.max_held, told.batch_size, told.batches.batch_size) == (32, 5, 5)
    monkeypatch.setattr(batches_module, "free_memory", lambda: None)
    assert (
        make_worker(aws_stack, engines["faster-whisper"], probe=gpu, device="cuda", model="large-v3").batch_size == 14
    )
