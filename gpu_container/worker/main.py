"""The worker: it holds up to K claimed jobs and keeps the accelerator busy with batches of
their 30 s windows. Stateless; any number run side by side.

Each held job is a short pipeline of its own, `claim -> download -> open (probe) -> windows
-> assemble -> write outputs -> commit -> delete`, with its own claim and fencing attempt,
heartbeat (lease, message visibility, progress, cancel detection), log and failure code.
Between its windows and the model sits the batching: a pure scheduler (scheduler.py) fills
batches of up to B windows from all held jobs (round-robin, short jobs first, with aging) and
a runner (batched.py) transcribes a batch; results go back to their jobs. Claiming goes on as
jobs finish (continuous batching), so a long file never holds short ones back. With K = 1 the
worker runs one job at a time.

- The download and the probe of a new job, and the writing and commit of a finished one, run
  on a small thread pool, so batches keep running meanwhile. Audio is decoded lazily, in
  blocks, on a prefetch thread per job: memory stays bounded whatever the file's length.
- Failures are classified per job: PermanentJobError -> `failed` with its code, message
  deleted; anything else -> the job is given back and its message returns (SQS retries, then
  the DLQ). One job's bad file or failed window never touches its batch-mates.
- A job's log is written as it goes (each heartbeat flushes it), so an attempt that is killed
  still leaves its lines.
- SIGTERM (Spot reclaim, Batch timeout): stop claiming, give every unfinished job back with its
  message visible at once, exit 0. After the idle period with nothing held: exit 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from batchscribe import keys
from batchscribe.errors import InvalidTransition, JobNotFound, OwnerAtCap, StaleAttempt
from batchscribe.models import PRIORITIES, ErrorInfo, Job, JobStatus, ResultSummary
from batchscribe.queue import ClassQueues, Received
from batchscribe.repository import JobRepository
from batchscribe.settings import ConfigError, WorkerSettings
from batchscribe.sources import FetchFailed, FetchLimits, FetchStopped, fetch, redacted
from batchscribe.storage import MediaStore
from batchscribe.urlguard import Resolver, system_resolver
from gpu_container.worker.batched import (
    BatchRunner,
    DecodeOptions,
    assemble,
    assemble_channels,
    run_isolating,
    runner_for,
)
from gpu_container.worker.engines import Engine, load_engine
from gpu_container.worker.errors import InputChanged, InputMissing, JobCancelled, LeaseLost, PermanentJobError
from gpu_container.worker.scheduler import JobFailed, JobFinished, Scheduler
from gpu_container.worker.transcript import CONTENT_TYPES, READABLE_CUES, Transcript, render
from gpu_container.worker.windows import MediaStream, SplitStream, open_channels, open_media, prefetch

logger = Logger(service="batchscribe-worker")

EngineLoader = Callable[[str, str], Engine]
RunnerFactory = Callable[[Engine], BatchRunner]
EngineKey = tuple[str, str]  # (engine, model)


class Outcome(StrEnum):
    """What became of one job a worker claimed (or one message it could not claim)."""

    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    GIVEN_BACK = "given_back"
    RETRY = "retry"  # a transient failure: the job was given back for another attempt
    FAILED = "failed"  # a permanent failure: the job failed with its code
    POISON_MESSAGE = "poison_message"
    UNKNOWN_JOB = "unknown_job"
    DUPLICATE = "duplicate"
    DEFERRED = "deferred"  # another worker holds a live lease
    NOT_READY = "not_ready"  # still pending: the intake sends just before it flips the status
    OVER_CAP = "over_cap"  # its owner runs its cap of jobs: left queued, looked at again later
    CLAIMED = "claimed"


def default_batching(device: str, model: str) -> tuple[int, int]:
    """(K held jobs, B windows per batch) for a device and a model, when not configured.

    CPU: a small batch (two cores gain little from more, see bench/RESULTS.md). GPU: sized for
    the 16-24 GB cards of the default pools (T4, A10G, L4) in fp16: a large model's encoder
    activations for 32 windows fit beside its weights; smaller models take 64. K = B, so every
    held job can have a window in each batch.
    """
    if device != "cuda":
        return 4, 8
    batch = 32 if model.startswith("large") and "turbo" not in model else 64
    return batch, batch


class JobLog:
    """One attempt's log lines, flushed to the job's log object as they come (the heartbeat
    flushes every few seconds), after the lines of earlier attempts."""

    def __init__(self, job: Job, worker: str, store: MediaStore) -> None:
        self.job_id = job.job_id
        self.key = keys.log_key(job.owner_key, job.job_id)
        self.store = store
        self.lines: list[str] = []
        self._earlier = ""
        self._lock = threading.Lock()  # the lines
        self._write_lock = threading.Lock()  # one write at a time, always of the latest text
        self._dirty = False
        with contextlib.suppress(Exception):  # the first attempt has no log yet
            self._earlier = store.get_bytes(self.key).decode()
        self.add(f"attempt {job.attempt} on worker {worker}")
        self.flush()

    def add(self, message: str, **extra: Any) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        with self._lock:
            self.lines.append(f"{stamp} {message}{' ' + detail if detail else ''}")
            self._dirty = True
        logger.info(message, extra={"job_id": self.job_id, **extra})

    def text(self) -> str:
        with self._lock:
            return self._earlier + "\n".join(self.lines) + "\n"

    def flush(self) -> None:
        """Write the log object if lines were added since the last write (never raises)."""
        with self._write_lock:
            with self._lock:
                if not self._dirty:
                    return
                self._dirty = False
                text = self._earlier + "\n".join(self.lines) + "\n"
            try:
                self.store.put_bytes(self.key, text.encode(), "text/plain; charset=utf-8")
            except Exception as exc:
                with self._lock:
                    self._dirty = True
                logger.warning("could not write the job log", extra={"job_id": self.job_id, "error": str(exc)})


class Heartbeat(threading.Thread):
    """Extends one job's lease and its message's visibility, records its progress, flushes
    its log, and learns when the job was cancelled or taken over."""

    def __init__(self, worker: Worker, job: Job, receipt: str, log: JobLog) -> None:
        super().__init__(name=f"heartbeat-{job.job_id[:8]}", daemon=True)
        self.worker, self.job, self.receipt, self.log = worker, job, receipt, log
        self.progress = 0
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._halt = threading.Event()
        self._beating = threading.Lock()  # held while one beat runs

    def run(self) -> None:
        while not self._halt.wait(self.worker.settings.timings.heartbeat_seconds):
            with self._beating:
                if not self._halt.is_set():
                    self.beat()

    def beat(self) -> None:
        t = self.worker.settings.timings
        try:
            self.worker.queue.extend(self.receipt, t.visibility_seconds)
        except Exception as exc:
            logger.warning("could not extend message visibility", extra={"error": str(exc)})
        try:
            self.worker.repo.heartbeat(self.job.job_id, self.job.attempt, t.lease_seconds, self.progress)
        except StaleAttempt:
            self.lost.set()
        except InvalidTransition as exc:
            status = (exc.details or {}).get("status")
            (self.cancelled if status == JobStatus.CANCELLED.value else self.lost).set()
        except JobNotFound:
            self.lost.set()
        except Exception as exc:
            logger.warning("heartbeat failed", extra={"error": str(exc)})
        self.log.flush()

    def stop(self) -> None:
        """No beat after this returns: one in progress is waited for, so a visibility the
        caller sets next (a give-back's 0) is not overwritten by a late extension."""
        self._halt.set()
        if threading.current_thread() is not self:
            with self._beating:
                pass


@dataclass(eq=False)
class JobRun:
    """One claimed job's own state: its claim (attempt), message, heartbeat, log, files and
    audio stream, and the compute time its windows took (its share of each batch)."""

    job: Job
    received: Received
    log: JobLog
    beat: Heartbeat
    tmp: tempfile.TemporaryDirectory[str]
    key: EngineKey
    stream: MediaStream | SplitStream | None = None
    engine: Engine | None = None
    compute_seconds: float = 0.0
    claimed_at: float = field(default_factory=time.perf_counter)

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def duration(self) -> float:
        if self.stream is None:
            return 0.0
        return self.stream.total_seconds or self.stream.decoded_seconds

    @property
    def work_seconds(self) -> float:
        """Source seconds to transcribe: the duration once per channel transcribed apart."""
        channels = self.stream.channels if isinstance(self.stream, SplitStream) else 1
        return self.duration * channels

    def close(self) -> None:
        self.beat.stop()
        if self.stream is not None:
            self.stream.close()
        self.tmp.cleanup()


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        engine_loader: EngineLoader | None = None,
        runner_factory: RunnerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        self.resolver = resolver  # source URLs' host names (tests give their own)
        self.worker_id = settings.worker_name
        self.repo = JobRepository(settings.table_name)
        self.store = MediaStore(settings.bucket_name)
        # its pool's priority classes, received from in a weighted order (batchscribe.queue)
        self.queue = ClassQueues(settings.jobs_queue_url, settings.class_queue_urls)
        self.clock = clock
        self.stopping = threading.Event()
        self.jobs_done = 0  # jobs claimed
        self.outcomes: list[Outcome] = []
        self._engine_loader = engine_loader or self._load_engine
        self._runner_factory = runner_factory or runner_for
        self._engines: dict[EngineKey, Engine] = {}
        self._runners: dict[EngineKey, BatchRunner] = {}
        self._engine_lock = threading.Lock()
        self._schedulers: dict[EngineKey, Scheduler[Any, Any]] = {}
        self._held: dict[str, JobRun] = {}  # claimed and not yet finished
        self._preparing: dict[Future[JobRun], JobRun] = {}
        self._finishing: list[Future[Outcome]] = []
        k, b = default_batching(self._device(), settings.model)
        self.max_held = settings.max_held_jobs or k
        self.batch_size = settings.batch_size or b
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="job-io")

    # ---- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))

    def request_stop(self, why: str = "stop requested") -> None:
        logger.info("stopping: claiming nothing new, giving back what is held", extra={"reason": why})
        self.stopping.set()

    def run(self) -> int:
        s, t = self.settings, self.settings.timings
        logger.info(
            "worker started",
            extra={
                "worker": self.worker_id,
                "engine": s.engine,
                "model": s.model,
                "uid": os.getuid(),
                "held_jobs": self.max_held,
                "batch_size": self.batch_size,
            },
        )
        idle_since = self.clock()
        try:
            while not self.stopping.is_set():
                if self._busy():
                    idle_since = self.clock()
                elif self._claims_left() == 0:
                    logger.info("took its maximum number of jobs; exiting", extra={"jobs": self.jobs_done})
                    break
                elif self.clock() - idle_since >= t.idle_exit_seconds:
                    logger.info(
                        "idle; exiting so the compute environment can scale to zero",
                        extra={"idle_seconds": round(self.clock() - idle_since, 1), "jobs": self.jobs_done},
                    )
                    break
                self._admit(idle_since)
                self._collect_prepared()
                self._drop_interrupted()
                ran = self._run_batches()
                self._collect_finished()
                if not ran and self._busy():
                    time.sleep(0.01)  # every held job's next window is still being decoded
        finally:
            self._give_back_all()
            self._pool.shutdown(wait=True)
            self._collect_finished(block=True)
        logger.info("worker stopped", extra={"jobs": self.jobs_done})
        return 0

    def _busy(self) -> bool:
        return bool(self._held or self._finishing)

    def _claims_left(self) -> int:
        cap = self.settings.max_jobs
        return self.max_held if not cap else min(self.max_held, cap - self.jobs_done)

    # ---- claiming --------------------------------------------------------------------

    def _admit(self, idle_since: float) -> None:
        """Claim more jobs while there is room: a long poll when nothing is held, a glance
        between batches otherwise."""
        room = min(self.max_held - len(self._held), self._claims_left())
        if room <= 0 or self.stopping.is_set():
            return
        t = self.settings.timings
        idle_left = t.idle_exit_seconds - (self.clock() - idle_since)
        wait = 0 if self._held else int(max(0, min(t.poll_seconds, idle_left)))
        for received in self.queue.receive(wait_seconds=wait, max_messages=min(10, room)):
            if self.stopping.is_set() or len(self._held) >= self.max_held or self._claims_left() <= 0:
                self.queue.extend(received.receipt_handle, 0)  # not ours to take any more
                continue
            self.outcomes.append(self.handle(received))

    def handle(self, received: Received) -> Outcome:
        """Claim the job a message names and start preparing it (or say why not)."""
        if received.message is None:
            logger.error("not a job message; deleting", extra={"body": received.raw_body[:300]})
            self.queue.delete(received.receipt_handle)
            return Outcome.POISON_MESSAGE
        job_id = received.message.job_id
        try:
            job = self._claim(job_id)
        except JobNotFound:
            self.queue.delete(received.receipt_handle)
            return Outcome.UNKNOWN_JOB
        except OwnerAtCap:
            return self._over_cap(job_id, received)
        except InvalidTransition:
            return self._not_claimed(job_id, received)
        return self._start(job, received)

    def _claim(self, job_id: str) -> Job:
        s = self.settings
        return self.repo.claim(job_id, self.worker_id, s.timings.lease_seconds, owner_cap=s.max_running_per_owner)

    def _over_cap(self, job_id: str, received: Received) -> Outcome:
        """The job's owner already runs its cap: the job stays queued and its message comes
        back later as a fresh one (not a receive towards the DLQ); others' jobs go first."""
        self.repo.seen_over_cap(job_id)
        self.queue.send_later(received, self.settings.owner_cap_delay_seconds)
        logger.info("owner at its running cap; job left queued", extra={"job_id": job_id})
        return Outcome.OVER_CAP

    def _start(self, job: Job, received: Received) -> Outcome:
        """Hold a job just claimed: its log, heartbeat and preparation begin."""
        self.jobs_done += 1
        self._count_claim()
        log = JobLog(job, self.worker_id, self.store)
        run = JobRun(
            job=job,
            received=received,
            log=log,
            beat=Heartbeat(self, job, received.receipt_handle, log),
            tmp=tempfile.TemporaryDirectory(prefix="batchscribe-"),
            key=(self.settings.engine, job.options.model or self.settings.model),
        )
        run.beat.start()
        self._held[job.job_id] = run
        self._preparing[self._pool.submit(self._prepare, run)] = run
        return Outcome.CLAIMED

    def _count_claim(self) -> None:
        """The pool's throughput for queue estimates: best effort, never in a job's way."""
        try:
            self.repo.count_claim(self.settings.jobs_queue_url)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("claim not counted", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _not_claimed(self, job_id: str, received: Received) -> Outcome:
        try:
            current = self.repo.get(job_id)
        except JobNotFound:
            self.queue.delete(received.receipt_handle)
            return Outcome.UNKNOWN_JOB
        if current.status.terminal:
            logger.info(
                "duplicate message for a finished job; deleted",
                extra={"job_id": job_id, "status": current.status},
            )
            self.queue.delete(received.receipt_handle)
            return Outcome.DUPLICATE
        if current.status is JobStatus.RUNNING:
            # Another worker holds a live lease: come back once it would have expired.
            remaining = (current.lease_expires_at or 0) - time.time()
            self.queue.extend(received.receipt_handle, int(min(43_200, max(1, remaining + 2))))
            return Outcome.DEFERRED
        # pending: the upload intake sends the message just before it flips the status, so an
        # idle worker often sees it a moment early. Look again shortly before putting it back.
        for _ in range(5):
            time.sleep(0.2)
            with contextlib.suppress(InvalidTransition, JobNotFound):
                try:
                    job = self._claim(job_id)
                except OwnerAtCap:
                    return self._over_cap(job_id, received)
                return self._start(job, received)
        self.queue.extend(received.receipt_handle, 5)
        return Outcome.NOT_READY

    # ---- preparing a job (pool thread) -------------------------------------------------

    def _prepare(self, run: JobRun) -> JobRun:
        """Load the job's engine, download its input and probe it (decoding starts later)."""
        run.engine = self._engine_for(run.key)
        path = self.download(run)
        s = self.settings
        if run.job.options.channels == "split":  # channel identification: each channel on its own
            run.stream = open_channels(path, s.max_duration_seconds, block_seconds=s.decode_block_seconds)
            if isinstance(run.stream, SplitStream):
                run.log.add("channels transcribed apart", channels=run.stream.channels)
        else:
            run.stream = open_media(path, s.max_duration_seconds, block_seconds=s.decode_block_seconds)
        run.log.add(
            "opened",
            container=run.stream.container_name,
            codec=run.stream.codec,
            seconds=round(run.stream.duration, 2) if run.stream.duration is not None else "unknown",
        )
        return run

    def download(self, run: JobRun) -> Path:
        path = Path(run.tmp.name) / "input"
        pinned = run.job.input
        if pinned.source_url is not None:
            return self.fetch_source(run, path)
        try:
            # the object intake checked, not whatever a second upload to the key put there since
            self.store.download(pinned.key, path, etag=pinned.etag, version_id=pinned.version_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                raise InputMissing("the uploaded file is gone from storage; upload it again in a new job") from exc
            if code in ("412", "PreconditionFailed"):
                raise InputChanged(
                    "the uploaded file was replaced after the job was queued; create a new job for the new file"
                ) from exc
            raise
        run.log.add("downloaded", bytes=path.stat().st_size)
        return path

    def fetch_source(self, run: JobRun, path: Path) -> Path:
        """A source-URL job: GET its URL within the limits (batchscribe.sources), stopping as
        soon as the job is cancelled or taken over, or the worker stops."""
        s, job = self.settings, run.job
        assert job.input.source_url is not None
        run.log.add("fetching", url=redacted(job.input.source_url), max_bytes=job.input.declared_size)
        try:
            fetched = fetch(
                job.input.source_url,
                path,
                FetchLimits(job.input.declared_size, s.source_timeout_seconds, s.source_max_seconds),
                resolver=self.resolver,
                allow_private=s.allow_private,
                stop=lambda: run.beat.cancelled.is_set() or run.beat.lost.is_set() or self.stopping.is_set(),
            )
        except FetchFailed as exc:
            if exc.permanent:
                raise PermanentJobError(str(exc), exc.code) from exc
            raise
        run.log.add("fetched", bytes=fetched.size, content_type=fetched.content_type, redirects=fetched.redirects)
        with contextlib.suppress(InvalidTransition):  # cancelled or taken over: seen at the next step
            self.repo.record_fetched(job.job_id, job.attempt, fetched.size)
        return path

    def _collect_prepared(self) -> None:
        for future in [f for f in self._preparing if f.done()]:
            run = self._preparing.pop(future)
            error = future.exception()
            if self._interrupted(run):  # cancelled or taken over meanwhile: whatever the preparing did
                continue
            if isinstance(error, FetchStopped):
                continue  # the worker stops: still held, so given back (visible at once) on the way out
            if error is not None:
                self._failed(run, error)
                continue
            assert run.stream is not None
            self._scheduler(run.key).add(
                run.job_id,
                prefetch(run.stream.windows()),
                options=DecodeOptions.from_job(run.job.options),
                # batches fill in the same order as claims: high, normal, low (0 runs first)
                priority=PRIORITIES.index(run.job.priority),
                expected_seconds=run.stream.duration,
            )

    # ---- batches -----------------------------------------------------------------------

    def _scheduler(self, key: EngineKey) -> Scheduler[Any, Any]:
        if key not in self._schedulers:
            self._schedulers[key] = Scheduler(read_ahead=self.settings.read_ahead)
        return self._schedulers[key]

    def _run_batches(self) -> bool:
        """One batch per engine that has windows ready; results routed to their jobs."""
        ran = False
        for key, scheduler in self._schedulers.items():
            if not len(scheduler):
                continue
            batch = scheduler.next_batch(self.batch_size)
            if batch:
                started = time.perf_counter()
                results = run_isolating(self._runner(key), batch)
                share = (time.perf_counter() - started) / len(batch)
                for work in batch:
                    if work.job in self._held:
                        self._held[work.job].compute_seconds += share
                scheduler.complete(batch, results)
                ran = True
            for event in scheduler.events():
                run = self._held.get(event.job)
                if run is None:
                    continue
                if isinstance(event, JobFailed):
                    self._failed(run, event.error)
                elif isinstance(event, JobFinished) and not self._interrupted(run):
                    # no longer held: from here the commit's condition decides (a cancel that
                    # lands now loses the race or wins it, and then the outputs are removed)
                    del self._held[run.job_id]
                    self._finishing.append(self._pool.submit(self._finish, run, event.results))
        for run in self._held.values():
            held_by = self._schedulers.get(run.key)
            if held_by is not None and run.job_id in held_by and run.work_seconds > 0:
                run.beat.progress = int(min(99, held_by.progress(run.job_id) / run.work_seconds * 100))
        return ran

    def _runner(self, key: EngineKey) -> BatchRunner:
        if key not in self._runners:
            self._runners[key] = self._runner_factory(self._engine_for(key))
        return self._runners[key]

    # ---- interruptions -------------------------------------------------------------------

    def _drop_interrupted(self) -> None:
        """Jobs cancelled or taken over since the last batch leave the scheduler at once
        (a job still being prepared is looked at once its download is done)."""
        preparing = set(self._preparing.values())
        for run in list(self._held.values()):
            if run not in preparing:
                self._interrupted(run)

    def _interrupted(self, run: JobRun) -> bool:
        """Release a job whose heartbeat learned it was cancelled or taken over."""
        if run.beat.cancelled.is_set():
            self._release(run, "cancelled; stopped", delete_message=True)
            self.outcomes.append(Outcome.CANCELLED)
            return True
        if run.beat.lost.is_set():
            self._release(run, "lease lost to another attempt; stopped without writing", delete_message=True)
            self.outcomes.append(Outcome.LEASE_LOST)
            return True
        return False

    def _release(self, run: JobRun, why: str, *, delete_message: bool, give_back_after: int | None = None) -> None:
        """Forget a held job: out of the scheduler, its message deleted or made visible again
        (after `give_back_after` seconds, with the job given back), its log flushed."""
        self._held.pop(run.job_id, None)
        run.beat.stop()  # before the message is touched
        scheduler = self._schedulers.get(run.key)
        if scheduler is not None:
            scheduler.remove(run.job_id)
        run.log.add(why)
        if give_back_after is not None:
            self._give_back(run, give_back_after)
        elif delete_message:
            self.queue.delete(run.received.receipt_handle)
        run.close()
        run.log.flush()

    def _give_back(self, run: JobRun, visible_after: int) -> None:
        """The job queued again and its message visible after `visible_after` seconds. Its
        heartbeat is stopped first (a beat in progress waited for): a late extension would
        hide the message again for the whole visibility timeout."""
        run.beat.stop()
        try:
            self.repo.give_back(run.job_id, run.job.attempt)
        except InvalidTransition:  # cancelled or taken over: that state stands
            pass
        except Exception as exc:  # its lease runs out instead, and then it is claimable again
            logger.warning("could not give the job back", extra={"job_id": run.job_id, "error": repr(exc)})
        with contextlib.suppress(Exception):
            self.queue.extend(run.received.receipt_handle, visible_after)

    def _failed(self, run: JobRun, error: BaseException) -> None:
        """Classify one job's failure: permanent -> failed with its code; else give it back."""
        if isinstance(error, PermanentJobError):
            run.log.add("failed", code=error.code, reason=str(error))
            with contextlib.suppress(InvalidTransition):  # cancelled or taken over: that state stands
                self.repo.fail(
                    run.job_id,
                    ErrorInfo(code=error.code, message=str(error)),
                    attempt=run.job.attempt,
                    log_key=run.log.key,
                )
            self._release(run, "message deleted: retrying cannot help", delete_message=True)
            self.outcomes.append(Outcome.FAILED)
            return
        logger.error("transient failure", extra={"job_id": run.job_id, "error": repr(error)})
        run.log.add("transient failure; the job will be retried", error=f"{type(error).__name__}: {error}")
        self._release(
            run,
            "given back",
            delete_message=False,
            give_back_after=min(60, 5 * run.received.receive_count),
        )
        self.outcomes.append(Outcome.RETRY)

    def _give_back_all(self) -> None:
        """SIGTERM or the end of the loop: every unfinished job goes back, visible at once."""
        for future in list(self._preparing):
            with contextlib.suppress(Exception):
                future.result()
        self._preparing.clear()
        for run in list(self._held.values()):  # jobs being finished are no longer held
            # one job's trouble does not keep the others from going back
            try:
                self._release(run, "shutting down; job given back", delete_message=False, give_back_after=0)
                self.outcomes.append(Outcome.GIVEN_BACK)
            except Exception:
                logger.exception("could not release a job on the way out", extra={"job_id": run.job_id})

    # ---- finishing a job (pool thread) -------------------------------------------------

    def _cost(self, compute_seconds: float) -> float | None:
        """The job's share of what its worker costs: its compute seconds at the pool's price."""
        hourly = self.settings.instance_hourly_usd
        return None if hourly is None else round(compute_seconds * hourly / 3600, 8)

    def _finish(self, run: JobRun, results: list[Any]) -> Outcome:
        try:
            assert run.engine is not None  # prepared
            engine, model = run.engine.name, run.engine.model_name
            if isinstance(run.stream, SplitStream):
                transcript = assemble_channels(results, run.stream.window_channels, run.duration)
            else:
                transcript = assemble(results, run.duration)
            transcript = transcript.model_copy(update={"engine": engine, "model": model})
            run.log.add(
                "transcribed",
                engine=engine,
                model=model,
                device=run.engine.device,
                language=transcript.language,
                segments=len(transcript.segments),
                compute_seconds=round(run.compute_seconds, 2),
            )
            outputs = self.write_outputs(run, transcript)
            summary = ResultSummary(
                language=transcript.language,
                duration_seconds=round(transcript.duration, 3),
                outputs=outputs,
                engine=engine,
                model=model,
                compute_seconds=round(run.compute_seconds, 3),
                real_time_factor=round(run.compute_seconds / max(transcript.duration, 1e-6), 4),
                segments=len(transcript.segments),
                cost_usd=self._cost(run.compute_seconds),
            )
            outcome = self.commit(run, summary, outputs)
            self.queue.delete(run.received.receipt_handle)
        except (JobCancelled, LeaseLost) as exc:
            cancelled = isinstance(exc, JobCancelled)
            run.log.add("cancelled while committing" if cancelled else "lease lost while committing")
            self.queue.delete(run.received.receipt_handle)
            outcome = Outcome.CANCELLED if cancelled else Outcome.LEASE_LOST
        except Exception as exc:
            # writing outputs or committing failed transiently: give the job back
            logger.exception("could not finish the job", extra={"job_id": run.job_id})
            run.log.add("could not finish; the job will be retried", error=f"{type(exc).__name__}: {exc}")
            self._give_back(run, 5)
            outcome = Outcome.RETRY
        finally:
            run.close()
            run.log.flush()
        return outcome

    def _collect_finished(self, block: bool = False) -> None:
        for future in list(self._finishing):
            if block or future.done():
                self._finishing.remove(future)
                try:
                    self.outcomes.append(future.result())
                except Exception:
                    logger.exception("finishing a job raised")

    def write_outputs(self, run: JobRun, transcript: Transcript) -> dict[str, str]:
        outputs: dict[str, str] = {}
        job = run.job
        for fmt in job.options.formats:
            key = keys.output_key(job.owner_key, job.job_id, fmt)
            text = render(transcript, fmt, cues=READABLE_CUES)
            self.store.put_bytes(key, text.encode(), CONTENT_TYPES[fmt])
            outputs[fmt] = key
        run.log.add("outputs written", formats=",".join(outputs))
        return outputs

    def commit(self, run: JobRun, summary: ResultSummary, outputs: dict[str, str]) -> Outcome:
        try:
            self.repo.succeed(run.job_id, run.job.attempt, summary, run.log.key)
        except StaleAttempt as exc:
            raise LeaseLost(run.job_id) from exc
        except InvalidTransition as exc:
            if (exc.details or {}).get("status") == JobStatus.CANCELLED.value:
                for key in outputs.values():  # the cancel won the race: leave nothing behind
                    self.store.delete(key)
                raise JobCancelled(run.job_id) from exc
            raise LeaseLost(run.job_id) from exc
        run.log.add("succeeded", rtf=summary.real_time_factor, audio_seconds=summary.duration_seconds)
        return Outcome.SUCCEEDED

    # ---- engines ---------------------------------------------------------------------

    def _device(self) -> str:
        if self.settings.device != "auto":
            return self.settings.device
        from gpu_container.worker.engines import cuda_available

        return "cuda" if cuda_available() else "cpu"

    def _engine_for(self, key: EngineKey) -> Engine:
        with self._engine_lock:  # prepare threads may ask for the same engine at once
            if key not in self._engines:
                self._engines[key] = self._engine_loader(*key)
            return self._engines[key]

    def _load_engine(self, engine: str, model: str) -> Engine:
        s = self.settings
        return load_engine(
            engine,
            model=model,
            model_path=s.model_path if model == s.model else None,
            device=s.device,
            compute_type=s.compute_type,
            cpu_threads=s.cpu_threads,
            beam_size=s.beam_size,
            allow_download=s.allow_download,
            model_dir=s.model_dir,
            cache_dir=s.cache_dir,
        )


EXIT_CONFIG = 78  # sysexits' EX_CONFIG: the job definition's environment is wrong; a retry cannot help


def main() -> int:
    try:
        settings = WorkerSettings.from_env()
    except ConfigError as exc:  # one log line naming what to set, not a traceback
        logger.error("worker not started: fix the job definition's environment", extra={"error": str(exc)})
        return EXIT_CONFIG
    worker = Worker(settings)
    worker.install_signal_handlers()
    return worker.run()
