"""The worker loop: receive -> claim -> download -> decode -> transcribe -> write outputs
-> commit -> delete. Stateless; any number run side by side.

- A heartbeat thread extends the job's lease and the message's visibility and writes
  progress; when its write is refused it learns the job was cancelled or taken over, and
  the transcription stops at the next segment.
- Failures are classified once: PermanentJobError -> `failed` with its code, message
  deleted; anything else -> the job is given back and the message returns (SQS retries,
  then the DLQ).
- SIGTERM (Spot reclaim, Batch timeout): stop taking work, give the current job back with
  its message visible at once, exit 0. After `idle_exit_seconds` with no message: exit 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger

from batchscribe import keys
from batchscribe.errors import InvalidTransition, JobNotFound, StaleAttempt
from batchscribe.models import ErrorInfo, Job, JobStatus, ResultSummary
from batchscribe.queue import JobQueue, Received
from batchscribe.repository import JobRepository
from batchscribe.settings import WorkerSettings
from batchscribe.storage import MediaStore
from gpu_container.worker import media
from gpu_container.worker.engines import Engine, load_engine
from gpu_container.worker.errors import (
    JobCancelled,
    LeaseLost,
    PermanentJobError,
    ShutdownRequested,
)
from gpu_container.worker.transcript import CONTENT_TYPES, Transcript, render

logger = Logger(service="batchscribe-worker")

EngineLoader = Callable[[str, str], Engine]


class Outcome(StrEnum):
    """What became of one message."""

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


class JobLog:
    """The job's own log, written next to its outputs (appended across attempts)."""

    def __init__(self, job_id: str, attempt: int, worker: str) -> None:
        self.job_id = job_id
        self.lines: list[str] = []
        self.add(f"attempt {attempt} on worker {worker}")

    def add(self, message: str, **extra: Any) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        detail = " ".join(f"{k}={v}" for k, v in extra.items())
        self.lines.append(f"{stamp} {message}{' ' + detail if detail else ''}")
        logger.info(message, extra={"job_id": self.job_id, **extra})

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class Heartbeat(threading.Thread):
    def __init__(self, worker: Worker, job: Job, receipt: str) -> None:
        super().__init__(name=f"heartbeat-{job.job_id[:8]}", daemon=True)
        self.worker, self.job, self.receipt = worker, job, receipt
        self.progress = 0
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.worker.settings.timings.heartbeat_seconds):
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

    def stop(self) -> None:
        self._stop.set()


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        engine_loader: EngineLoader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_name
        self.repo = JobRepository(settings.table_name)
        self.store = MediaStore(settings.bucket_name)
        self.queue = JobQueue(settings.jobs_queue_url)
        self.clock = clock
        self.stopping = threading.Event()
        self.jobs_done = 0
        self._engines: dict[tuple[str, str], Engine] = {}
        self._engine_loader = engine_loader or self._load_engine

    # ---- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))

    def request_stop(self, why: str = "stop requested") -> None:
        logger.info("stopping: finishing nothing new", extra={"reason": why})
        self.stopping.set()

    def run(self) -> int:
        s, t = self.settings, self.settings.timings
        logger.info(
            "worker started",
            extra={"worker": self.worker_id, "engine": s.engine, "model": s.model, "uid": os.getuid()},
        )
        idle_since = self.clock()
        while not self.stopping.is_set():
            if s.max_jobs and self.jobs_done >= s.max_jobs:
                logger.info("took its maximum number of jobs; exiting", extra={"jobs": self.jobs_done})
                break
            idle = self.clock() - idle_since
            if idle >= t.idle_exit_seconds:
                logger.info(
                    "idle; exiting so the compute environment can scale to zero",
                    extra={"idle_seconds": round(idle, 1), "jobs": self.jobs_done},
                )
                break
            wait = int(max(0, min(t.poll_seconds, t.idle_exit_seconds - idle)))
            messages = self.queue.receive(wait_seconds=wait)
            for received in messages:
                if self.stopping.is_set():
                    self.queue.extend(received.receipt_handle, 0)  # not ours to take any more
                    continue
                self.handle(received)
                idle_since = self.clock()
        logger.info("worker stopped", extra={"jobs": self.jobs_done})
        return 0

    # ---- one message -----------------------------------------------------------------

    def handle(self, received: Received) -> Outcome:
        if received.message is None:
            logger.error("not a job message; deleting", extra={"body": received.raw_body[:300]})
            self.queue.delete(received.receipt_handle)
            return Outcome.POISON_MESSAGE
        job_id = received.message.job_id
        try:
            job = self.repo.claim(job_id, self.worker_id, self.settings.timings.lease_seconds)
        except JobNotFound:
            self.queue.delete(received.receipt_handle)
            return Outcome.UNKNOWN_JOB
        except InvalidTransition:
            return self._not_claimed(job_id, received)
        self.jobs_done += 1
        return self.process(job, received)

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
        # pending: the upload intake sends the message just before it flips the status
        self.queue.extend(received.receipt_handle, 5)
        return Outcome.NOT_READY

    def process(self, job: Job, received: Received) -> Outcome:
        log = JobLog(job.job_id, job.attempt, self.worker_id)
        beat = Heartbeat(self, job, received.receipt_handle)
        beat.start()
        try:
            outcome = self._pipeline(job, beat, log)
            self.queue.delete(received.receipt_handle)
        except JobCancelled:
            log.add("cancelled; stopped")
            self.queue.delete(received.receipt_handle)
            outcome = Outcome.CANCELLED
        except LeaseLost:
            log.add("lease lost to another attempt; stopped without writing")
            self.queue.delete(received.receipt_handle)
            outcome = Outcome.LEASE_LOST
        except ShutdownRequested:
            log.add("shutting down; job given back")
            self._give_back(job, received, delay=0)
            outcome = Outcome.GIVEN_BACK
        except PermanentJobError as exc:
            log.add("failed", code=exc.code, reason=str(exc))
            with contextlib.suppress(InvalidTransition):  # cancelled or taken over: that state stands
                self.repo.fail(
                    job.job_id,
                    ErrorInfo(code=exc.code, message=str(exc)),
                    attempt=job.attempt,
                    log_key=keys.log_key(job.owner_key, job.job_id),
                )
            self.queue.delete(received.receipt_handle)
            outcome = Outcome.FAILED
        except Exception as exc:
            log.add("transient failure; the job will be retried", error=f"{type(exc).__name__}: {exc}")
            logger.exception("transient failure", extra={"job_id": job.job_id})
            self._give_back(job, received, delay=min(60, 5 * received.receive_count))
            outcome = Outcome.RETRY
        finally:
            beat.stop()
            self._write_log(job, log)
        return outcome

    def _give_back(self, job: Job, received: Received, delay: int) -> None:
        with contextlib.suppress(InvalidTransition):  # cancelled or taken over: the message is a duplicate
            self.repo.give_back(job.job_id, job.attempt)
        self.queue.extend(received.receipt_handle, delay)

    # ---- the pipeline ----------------------------------------------------------------

    def _pipeline(self, job: Job, beat: Heartbeat, log: JobLog) -> Outcome:
        started = time.perf_counter()
        engine = self._engine_for(job)
        with tempfile.TemporaryDirectory(prefix="batchscribe-") as tmp:
            path = self.download(job, Path(tmp), log)
            self._check(beat)
            audio = self.decode(path, log)
        self._check(beat)
        transcript = self.transcribe(engine, job, audio, beat, log)
        compute = time.perf_counter() - started
        outputs = self.write_outputs(job, transcript, log)
        self._check(beat)
        summary = ResultSummary(
            language=transcript.language,
            duration_seconds=round(transcript.duration, 3),
            outputs=outputs,
            engine=engine.name,
            model=engine.model_name,
            compute_seconds=round(compute, 3),
            real_time_factor=round(compute / max(transcript.duration, 1e-6), 4),
            segments=len(transcript.segments),
        )
        return self.commit(job, summary, outputs, log)

    def _check(self, beat: Heartbeat) -> None:
        if beat.cancelled.is_set():
            raise JobCancelled(beat.job.job_id)
        if beat.lost.is_set():
            raise LeaseLost(beat.job.job_id)
        if self.stopping.is_set():
            raise ShutdownRequested(beat.job.job_id)

    def download(self, job: Job, tmp: Path, log: JobLog) -> Path:
        path = tmp / "input"
        self.store.download(job.input.key, path)
        log.add("downloaded", bytes=path.stat().st_size)
        return path

    def decode(self, path: Path, log: JobLog) -> media.Audio:
        audio = media.decode(path, self.settings.max_duration_seconds)
        log.add("decoded", container=audio.container, codec=audio.codec, seconds=round(audio.duration, 2))
        return audio

    def transcribe(self, engine: Engine, job: Job, audio: media.Audio, beat: Heartbeat, log: JobLog) -> Transcript:
        duration = audio.duration

        def on_progress(done_seconds: float) -> None:
            beat.progress = int(min(99, max(0, done_seconds / duration * 100)))
            self._check(beat)

        started = time.perf_counter()
        transcript = engine.transcribe(audio.samples, job.options, on_progress)
        log.add(
            "transcribed",
            engine=engine.name,
            model=engine.model_name,
            device=engine.device,
            language=transcript.language,
            segments=len(transcript.segments),
            seconds=round(time.perf_counter() - started, 2),
        )
        return transcript

    def write_outputs(self, job: Job, transcript: Transcript, log: JobLog) -> dict[str, str]:
        outputs: dict[str, str] = {}
        for fmt in job.options.formats:
            key = keys.output_key(job.owner_key, job.job_id, fmt)
            self.store.put_bytes(key, render(transcript, fmt).encode(), CONTENT_TYPES[fmt])
            outputs[fmt] = key
        log.add("outputs written", formats=",".join(outputs))
        return outputs

    def commit(self, job: Job, summary: ResultSummary, outputs: dict[str, str], log: JobLog) -> Outcome:
        try:
            self.repo.succeed(job.job_id, job.attempt, summary, keys.log_key(job.owner_key, job.job_id))
        except StaleAttempt as exc:
            raise LeaseLost(job.job_id) from exc
        except InvalidTransition as exc:
            if (exc.details or {}).get("status") == JobStatus.CANCELLED.value:
                for key in outputs.values():  # the cancel won the race: leave nothing behind
                    self.store.delete(key)
                raise JobCancelled(job.job_id) from exc
            raise LeaseLost(job.job_id) from exc
        log.add("succeeded", rtf=summary.real_time_factor, audio_seconds=summary.duration_seconds)
        return Outcome.SUCCEEDED

    def _write_log(self, job: Job, log: JobLog) -> None:
        key = keys.log_key(job.owner_key, job.job_id)
        try:
            try:
                previous = self.store.get_bytes(key).decode()
            except Exception:
                previous = ""
            self.store.put_bytes(key, (previous + log.text()).encode(), "text/plain; charset=utf-8")
        except Exception as exc:
            logger.warning("could not write the job log", extra={"error": str(exc)})

    # ---- engines ---------------------------------------------------------------------

    def _engine_for(self, job: Job) -> Engine:
        model = job.options.model or self.settings.model
        key = (self.settings.engine, model)
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
            batched=s.batched,
            allow_download=s.allow_download,
            model_dir=s.model_dir,
            cache_dir=s.cache_dir,
        )


def main() -> int:
    settings = WorkerSettings.from_env()
    worker = Worker(settings)
    worker.install_signal_handlers()
    return worker.run()
