"""One claimed job's own state while a worker holds it: its log, its heartbeat, its run.

Every object here is handed what it needs (the repository, the queue, the timings, the
store) and never reaches back into the worker, so the claiming side, the model loop and the
finishing pool can each hold a job in turn.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from batchscribe import keys
from batchscribe.errors import InvalidTransition, JobNotFound, StaleAttempt
from batchscribe.models import Job, JobStatus
from batchscribe.queue import ClassQueues, Received
from batchscribe.repository import JobRepository
from batchscribe.settings import Timings
from batchscribe.storage import MediaStore
from gpu_container.worker.disk import JobFiles
from gpu_container.worker.engines import Engine
from gpu_container.worker.log import logger
from gpu_container.worker.progress import Pace, Speed
from gpu_container.worker.windows import MediaStream, SplitStream

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
    STRAY = "stray"  # the job is still pending: nothing sends its message before it is queued
    OVER_CAP = "over_cap"  # its owner runs its cap of jobs: left queued, looked at again later
    CLAIMED = "claimed"
    PUT_BACK = "put_back"  # no room any more (the worker stops, or is full): visible again at once
    CLAIM_FAILED = "claim_failed"  # an AWS error: the message comes back after its visibility timeout
    NO_DISK = "no_disk"  # its input does not fit the free disk now: left queued, visible again at once
    NO_ENGINE = "no_engine"  # this worker cannot load its engine: left queued, unclaimed, sent again for later


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

    def __init__(
        self,
        job: Job,
        receipt: str,
        log: JobLog,
        *,
        repo: JobRepository,
        queue: ClassQueues,
        timings: Timings,
        speed: Speed | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{job.job_id[:8]}", daemon=True)
        self.job, self.receipt, self.log = job, receipt, log
        self.repo, self.queue, self.timings = repo, queue, timings
        self.pace = Pace(speed or Speed())  # the loop advances it at each batch; each beat writes it
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._halt = threading.Event()
        self._beating = threading.Lock()  # held while one beat runs

    def run(self) -> None:
        while not self._halt.wait(self.timings.heartbeat_seconds):
            with self._beating:
                if not self._halt.is_set():
                    self.beat()

    def beat(self) -> None:
        t = self.timings
        try:
            self.queue.extend(self.receipt, t.visibility_seconds)
        except Exception as exc:
            logger.warning("could not extend message visibility", extra={"error": str(exc)})
        try:
            self.repo.heartbeat(self.job.job_id, self.job.attempt, t.lease_seconds, self.pace.percent())
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

    @property
    def interrupted(self) -> bool:
        """The job was cancelled or taken over by another attempt."""
        return self.cancelled.is_set() or self.lost.is_set()


@dataclass(eq=False)
class JobRun:
    """One claimed job's own state: its claim (attempt), message, heartbeat, log, files (its
    folder and the disk reserved for it) and audio stream, and the compute time its windows took
    (its share of each batch)."""

    job: Job
    received: Received
    log: JobLog
    beat: Heartbeat
    files: JobFiles
    key: EngineKey
    stream: MediaStream | SplitStream | None = None
    engine: Engine | None = None
    compute_seconds: float = 0.0

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def work_seconds(self) -> float:
        """Source seconds to transcribe: the duration once per channel transcribed apart."""
        return self.stream.work_seconds if self.stream is not None else 0.0

    def close(self) -> None:
        self.beat.stop()
        if self.stream is not None:
            self.stream.close()
        self.files.release()  # the folder removed, its disk free for another job


def start_run(
    job: Job,
    received: Received,
    files: JobFiles,
    *,
    worker: str,
    key: EngineKey,
    store: MediaStore,
    repo: JobRepository,
    queue: ClassQueues,
    timings: Timings,
    speed: Speed | None = None,
) -> JobRun:
    """Hold a job just claimed: its log (first lines written) and its heartbeat begin."""
    log = JobLog(job, worker, store)
    beat = Heartbeat(job, received.receipt_handle, log, repo=repo, queue=queue, timings=timings, speed=speed)
    run = JobRun(job=job, received=received, log=log, beat=beat, files=files, key=key)
    beat.start()
    return run
