"""Receive -> claim: one message becomes a claimed job, or the reason it does not.

The cases a message cannot be claimed, each with its own answer:
- poison (not a job message): deleted;
- unknown job: deleted;
- duplicate for a finished (terminal) job: deleted, nothing else;
- another worker holds a live lease: the message comes back once that lease would expire;
- the owner runs its cap of jobs: the job stays queued, its message re-sent for later as a
  fresh one (no receive counted towards the dead-letter queue);
- the job is still pending: a stray. The upload intake records a job as queued before it
  sends the job's message (and the sweeper re-sends a message lost in between), so nothing
  legitimate sends a message for a pending job: it is deleted with a warning;
- its input does not fit the worker's free disk now (disk.py): the job is left queued, its
  message visible again at once for a worker with room (no claim, so no attempt is used);
- its input is larger than an empty worker of this pool can hold: failed
  `input_too_large_for_worker`, message deleted (no worker could ever run it);
- its engine (the model it asks for) cannot be loaded by this worker (`engine_ready`, asked
  before the claim, loads it): the job is left queued, its message re-sent as a fresh one for
  later (no attempt, no receive counted towards the DLQ); if no worker ever can, the sweeper
  ends it `queue_timeout`. So an engine that fails to load never costs a job an attempt.

Before the claim the job's record is read: its input size decides the disk reservation, which
a claimed job keeps (its folder) until its files are removed.

Every repository and queue call of claiming is here (the worker's other calls: running.py's
heartbeat, preparing.py's record_fetched, finishing.py's commit, fail and give-back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from batchscribe import errors
from batchscribe.errors import InvalidTransition, JobNotFound, OwnerAtCap
from batchscribe.models import ErrorInfo, Job, JobStatus
from batchscribe.queue import ClassQueues, Received
from batchscribe.repository import Counters, JobRepository
from gpu_container.worker.disk import DiskBudget, Fit, JobFiles
from gpu_container.worker.running import Outcome, logger

MAX_DEFER_SECONDS = 43_200  # SQS's longest visibility timeout
NO_ENGINE_DELAY_SECONDS = 60  # a job whose engine this worker cannot load is looked at again after this long
CLAIMABLE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class Claimed:
    """A job this worker claimed, and its folder with the disk it reserved."""

    job: Job
    files: JobFiles


class Claimer:
    """Claims the job a message names (queued -> running, attempt + 1, a lease) for this
    worker, or answers a message that cannot be claimed (module docstring)."""

    def __init__(
        self,
        repo: JobRepository,
        counters: Counters,
        queue: ClassQueues,
        disk: DiskBudget,
        *,
        worker_id: str,
        lease_seconds: float,
        owner_cap: int,
        owner_cap_delay_seconds: int,
        now: Callable[[], float] = time.time,
        engine_ready: Callable[[Job], str | None] = lambda _job: None,
    ) -> None:
        self.repo, self.counters, self.queue, self.disk = repo, counters, queue, disk
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.owner_cap = owner_cap
        self.owner_cap_delay_seconds = owner_cap_delay_seconds
        self.now = now
        self.engine_ready = engine_ready

    def claim(self, received: Received) -> Claimed | Outcome:
        """The claimed job with its reserved folder, or the Outcome saying why the message was
        not claimed."""
        if received.message is None:
            logger.error("not a job message; deleting", extra={"body": received.raw_body[:300]})
            self.queue.delete(received.receipt_handle)
            return Outcome.POISON_MESSAGE
        job_id = received.message.job_id
        seen = self._read(job_id, received)
        if isinstance(seen, Outcome):
            return seen
        if seen.status in CLAIMABLE and (why := self.engine_ready(seen)) is not None:
            return self._no_engine(seen, received, why)
        files = self._reserve(seen, received)
        if isinstance(files, Outcome):
            return files
        try:
            job = self._claim(job_id, received, seen.owner_key)
        except BaseException:
            files.release()
            raise
        if isinstance(job, Outcome):
            files.release()
            return job
        return Claimed(job, files)

    def _claim(self, job_id: str, received: Received, owner_key: str) -> Job | Outcome:
        try:
            job = self.repo.claim(
                job_id, self.worker_id, self.lease_seconds, owner_cap=self.owner_cap, owner_key=owner_key
            )
        except JobNotFound:
            self.queue.delete(received.receipt_handle)
            return Outcome.UNKNOWN_JOB
        except OwnerAtCap:
            return self._over_cap(job_id, received)
        except InvalidTransition:
            return self._not_claimable(job_id, received)
        self._count_claim()
        return job

    def _read(self, job_id: str, received: Received) -> Job | Outcome:
        """The job's record as it is before the claim (its input size, its owner)."""
        try:
            return self.repo.get(job_id)
        except JobNotFound:
            self.queue.delete(received.receipt_handle)
            return Outcome.UNKNOWN_JOB

    def _reserve(self, seen: Job, received: Received) -> JobFiles | Outcome:
        """Reserve the disk the job's input takes (nothing for a job the claim will refuse
        anyway: it answers that message)."""
        need = self.disk.need(seen) if seen.status in CLAIMABLE else 0
        fit, files = self.disk.reserve(need)
        if fit is Fit.NEVER:
            return self._too_large(seen, need, received)
        if files is None:  # not now: another worker with room takes it, or this one later
            self.queue.extend(received.receipt_handle, 0)
            logger.info(
                "not enough free disk for the job now; left queued", extra={"job_id": seen.job_id, "bytes": need}
            )
            return Outcome.NO_DISK
        return files

    def _too_large(self, job: Job, need: int, received: Received) -> Outcome:
        """An input no worker of this pool can hold: failed at once, not passed around."""
        message = (
            f"the input needs {need} bytes of disk and this pool's workers have {self.disk.capacity}; "
            "split the file, or give the workers a larger volume"
        )
        try:
            self.repo.fail(
                job.job_id,
                ErrorInfo(code=errors.INPUT_TOO_LARGE_FOR_WORKER, message=message),
                only_from=frozenset({JobStatus.QUEUED}),
            )
        except InvalidTransition:  # moved on (running elsewhere, ended): the usual answers
            return self._not_claimable(job.job_id, received)
        self.queue.delete(received.receipt_handle)
        logger.warning("input larger than a worker's disk; job failed", extra={"job_id": job.job_id, "bytes": need})
        return Outcome.FAILED

    def _no_engine(self, job: Job, received: Received, why: str) -> Outcome:
        """This worker cannot load the job's engine: the job stays queued, unclaimed, its message
        sent again for later as a fresh one (a worker that can may take it meanwhile)."""
        self.queue.send_later(received, NO_ENGINE_DELAY_SECONDS)
        logger.warning(
            "cannot load the job's engine; left queued, unclaimed", extra={"job_id": job.job_id, "error": why}
        )
        return Outcome.NO_ENGINE

    def _count_claim(self) -> None:
        """The pool's throughput for queue estimates: best effort, never in a job's way."""
        try:
            self.counters.count_claim(self.queue.url)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("claim not counted", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _over_cap(self, job_id: str, received: Received) -> Outcome:
        """The job's owner already runs its cap: the job stays queued and its message comes
        back later as a fresh one (not a receive towards the DLQ); others' jobs go first."""
        self.repo.seen_over_cap(job_id)
        self.queue.send_later(received, self.owner_cap_delay_seconds)
        logger.info("owner at its running cap; job left queued", extra={"job_id": job_id})
        return Outcome.OVER_CAP

    def _not_claimable(self, job_id: str, received: Received) -> Outcome:
        try:
            current = self.repo.get(job_id)
        except JobNotFound:
            self.queue.delete(received.receipt_handle)
            return Outcome.UNKNOWN_JOB
        if current.status.terminal:
            logger.info(
                "duplicate message for a finished job; deleted", extra={"job_id": job_id, "status": current.status}
            )
            self.queue.delete(received.receipt_handle)
            return Outcome.DUPLICATE
        if current.status is JobStatus.RUNNING:
            # Another worker holds a live lease: come back once it would have expired.
            remaining = (current.lease_expires_at or 0) - self.now()
            self.queue.extend(received.receipt_handle, int(min(MAX_DEFER_SECONDS, max(1, remaining + 2))))
            return Outcome.DEFERRED
        if current.status is JobStatus.QUEUED:  # queued again since the claim was refused: try again
            self.queue.extend(received.receipt_handle, 0)
            return Outcome.DEFERRED
        logger.warning(
            "message for a job that is still pending: a stray (the intake sends a job's message only "
            "once it is queued); deleted",
            extra={"job_id": job_id, "status": current.status, "message_id": received.message_id},
        )
        self.queue.delete(received.receipt_handle)
        return Outcome.STRAY
