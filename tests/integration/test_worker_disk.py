"""The worker's disk budget (issue 20), with the fault injected: a fake `disk_usage` whose file
system is as large as the test says, its used space what lies in the worker's work folder.
A worker with little free disk holds fewer jobs, the rest stay queued with their messages
visible and are done later, nothing lost; a job no worker's disk can hold fails at once with
its code; a job that does not fit now goes back unclaimed (no attempt used). And what the worker
writes: nothing but each job's input, in the job's own folder, removed when the job leaves.
moto, the real tiny.en model, espeak speech."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from batchscribe.models import JobStatus
from batchscribe.repository import JobRepository
from gpu_container.worker.disk import JOB_MARGIN_BYTES, folder_bytes
from gpu_container.worker.engines import Engine
from gpu_container.worker.main import Outcome, Worker
from harness.audio import SENTENCES, speak
from tests.conftest import Stack
from tests.integration.workers import Scripted, queue_counts, submit, until_claimed, worker_settings

pytestmark = pytest.mark.slow


class Usage(NamedTuple):
    total: int
    used: int
    free: int


class FakeDisk:
    """A file system of `total` bytes; used: what is under the work folder, plus `others`."""

    def __init__(self, folder: Path, total: int) -> None:
        self.folder, self.total, self.others = folder, total, 0

    def __call__(self, _path: str) -> Usage:
        used = folder_bytes(self.folder) + self.others
        return Usage(self.total, used, max(0, self.total - used))


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("disk-speech")
    return {"short": speak(SENTENCES[0], d / "short.wav"), "longer": speak(" ".join(SENTENCES[1:5]), d / "longer.wav")}


def disk_worker(
    stack: Stack, engine: Engine | Scripted, work: Path, total: int, max_input: int, **over: Any
) -> tuple[Worker, FakeDisk]:
    disk = FakeDisk(work, total)
    settings = worker_settings(stack, work_dir=str(work), disk_floor_mb=0, max_input_bytes=max_input, **over)
    if isinstance(engine, Scripted):
        scripted = engine
        worker = Worker(
            settings, engine_loader=lambda _e, _m: scripted.inner, runner_factory=scripted.runner, disk_usage=disk
        )
    else:
        inner = engine
        worker = Worker(settings, engine_loader=lambda _e, _m: inner, disk_usage=disk)
    return worker, disk


def count_held(worker: Worker) -> list[int]:
    """The number of jobs holding disk after each reservation."""
    seen: list[int] = []
    reserve: Callable[[int], Any] = worker.disk.reserve

    def counted(need: int) -> Any:
        out = reserve(need)
        seen.append(len(worker.disk.held))
        return out

    worker.disk.reserve = counted  # type: ignore[method-assign]
    return seen


def test_a_worker_with_little_free_disk_holds_fewer_jobs_and_the_rest_wait_queued(
    aws_stack: Stack, recordings: dict[str, Path], engines: dict[str, Engine], tmp_path: Path
) -> None:
    """Given four jobs of one size and a disk that takes two and a half of them, a worker that
    may hold four holds two: the other two stay queued (attempt 0) with their messages visible,
    and are claimed as the first ones leave. All four succeed on their first attempt."""
    path = recordings["short"]
    size = path.stat().st_size
    ids = [submit(aws_stack, path) for _ in range(4)]
    repo = JobRepository(aws_stack.table)
    waiting: list[tuple[list[JobStatus], int]] = []

    def look(_batch: Sequence[Any]) -> None:
        if hook.calls == 1:
            until_claimed(worker, 2)
            jobs = [repo.get(j) for j in ids]
            waiting.append(([j.status for j in jobs if j.attempt == 0], queue_counts(aws_stack)[0]))

    hook = Scripted(engines["faster-whisper"], look)
    need = size + JOB_MARGIN_BYTES
    worker, _ = disk_worker(aws_stack, hook, tmp_path, total=need * 5 // 2, max_input=size, max_held_jobs=4, max_jobs=4)
    held = count_held(worker)

    assert worker.run() == 0

    assert max(held) == 2  # never more than the disk takes, though K = 4
    assert waiting == [([JobStatus.QUEUED] * 2, 2)]  # the other two: queued, their messages visible
    assert [(repo.get(j).status, repo.get(j).attempt) for j in ids] == [(JobStatus.SUCCEEDED, 1)] * 4
    assert Outcome.NO_DISK not in worker.outcomes  # the receive took only what fits: none turned away
    assert queue_counts(aws_stack) == (0, 0)
    assert list(tmp_path.iterdir()) == []  # every job's folder removed


def test_a_job_larger_than_an_empty_workers_disk_fails_at_once_with_its_code(
    aws_stack: Stack, recordings: dict[str, Path], engines: dict[str, Engine], tmp_path: Path
) -> None:
    small, large = recordings["short"], recordings["longer"]
    small_id, large_id = submit(aws_stack, small), submit(aws_stack, large)
    between = (small.stat().st_size + large.stat().st_size) // 2 + JOB_MARGIN_BYTES
    worker, _ = disk_worker(
        aws_stack, engines["faster-whisper"], tmp_path, total=between, max_input=large.stat().st_size, max_held_jobs=2
    )

    assert worker.run() == 0  # until idle

    repo = JobRepository(aws_stack.table)
    failed = repo.get(large_id)
    assert (failed.status, failed.attempt) == (JobStatus.FAILED, 0)  # never claimed: no worker loops on it
    assert failed.error is not None and failed.error.code == "input_too_large_for_worker"
    assert str(between) in failed.error.message
    assert repo.get(small_id).status is JobStatus.SUCCEEDED
    assert Outcome.FAILED in worker.outcomes
    assert queue_counts(aws_stack) == (0, 0)  # its message deleted


def test_a_job_that_does_not_fit_now_goes_back_unclaimed_and_is_done_once_there_is_room(
    aws_stack: Stack, recordings: dict[str, Path], engines: dict[str, Engine], tmp_path: Path
) -> None:
    """Something else fills the disk between the receive and the reservation: the job is not
    claimed (attempt 0, still queued), its message is visible again at once; with the space
    back, a worker runs it."""
    path = recordings["short"]
    job_id = submit(aws_stack, path)
    need = path.stat().st_size + JOB_MARGIN_BYTES
    worker, disk = disk_worker(aws_stack, engines["faster-whisper"], tmp_path, total=2 * need, max_input=need)
    [received] = worker.queue.receive(wait_seconds=0)
    disk.others = 3 * need // 2

    assert worker.handle(received) is Outcome.NO_DISK

    job = JobRepository(aws_stack.table).get(job_id)
    assert (job.status, job.attempt) == (JobStatus.QUEUED, 0)
    assert queue_counts(aws_stack) == (1, 0)  # visible at once, for a worker with room
    disk.others = 0
    worker.run()
    job = JobRepository(aws_stack.table).get(job_id)
    assert (job.status, job.attempt) == (JobStatus.SUCCEEDED, 1)


def test_the_worker_writes_nothing_but_each_jobs_input_in_its_own_folder(
    aws_stack: Stack, recordings: dict[str, Path], engines: dict[str, Engine], tmp_path: Path
) -> None:
    """What the disk margin must cover besides the input, measured: at every batch of two jobs
    (one transcribed as split channels) the work folder holds one folder per held job with one
    file, `input`, of exactly its upload's size (the decoder streams; the log and the outputs go
    to S3 from memory); nothing is left once they are done."""
    mono, stereo = recordings["longer"], tmp_path / "stereo.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(mono), "-ac", "2", str(stereo)], check=True, timeout=60
    )
    ids = [submit(aws_stack, mono), submit(aws_stack, stereo, channels="split")]
    sizes = {mono.stat().st_size, stereo.stat().st_size}
    work = tmp_path / "work"
    seen: list[list[tuple[str, str, int]]] = []

    def look(_batch: Sequence[Any]) -> None:
        files = [p for p in work.rglob("*") if p.is_file()]
        seen.append(sorted((p.parent.relative_to(work).as_posix(), p.name, p.stat().st_size) for p in files))

    hook = Scripted(engines["faster-whisper"], look)
    worker, _ = disk_worker(aws_stack, hook, work, total=10**9, max_input=max(sizes), max_held_jobs=2, max_jobs=2)
    worker.run()

    repo = JobRepository(aws_stack.table)
    assert [repo.get(j).status for j in ids] == [JobStatus.SUCCEEDED] * 2
    assert seen
    for files in seen:
        assert {name for _, name, _ in files} == {"input"}, files
        assert {size for _, _, size in files} <= sizes, files
        assert all(folder.startswith("batchscribe-") and "/" not in folder for folder, _, _ in files), files
        assert len(files) <= 2
    assert list(work.iterdir()) == []  # every job's folder removed
