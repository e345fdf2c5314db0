"""Lifecycle: what closes jobs that nothing else would. Dead letters (a message used up its
receives), the sweeper (expired upload windows, lost leases) and worker exits (a Batch
worker ended while it still held jobs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from aws_lambda_powertools import Logger

from batchscribe import errors
from batchscribe.errors import InvalidTransition, JobNotFound, StaleAttempt
from batchscribe.models import ErrorInfo, Job, JobStatus, MessageReason
from batchscribe.queue import JobDispatcher
from batchscribe.repository import JobRepository
from batchscribe.settings import LifecycleSettings

logger = Logger(service="batchscribe", child=True)


class DeadLetterOutcome(StrEnum):
    FAILED = "failed"
    UNKNOWN_JOB = "unknown_job"
    ALREADY_TERMINAL = "already_terminal"
    LIVE_WORKER = "live_worker"  # a live worker holds the job: the message was a duplicate


@dataclass
class SweepCounts:
    upload_expired: int = 0
    requeued: int = 0


@dataclass
class ExitCounts:
    requeued: int = 0
    failed: int = 0


@dataclass
class Lifecycle:
    settings: LifecycleSettings
    repo: JobRepository
    dispatcher: JobDispatcher
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: LifecycleSettings, clock: Callable[[], float] = time.time) -> Lifecycle:
        return cls(
            settings=settings,
            repo=JobRepository(settings.table_name, clock=clock),
            dispatcher=JobDispatcher(settings),
            clock=clock,
        )

    def send_again(self, job: Job) -> None:
        """Put a job's message back on its queue (duplicates are harmless)."""
        self.dispatcher.send(job.job_id, job.input.size or job.input.declared_size, MessageReason.REQUEUE)

    def dead_letter(self, job_id: str) -> DeadLetterOutcome:
        """A job message exhausted its receives: the job fails, unless it already ended or a
        live worker still holds it (then the message was a duplicate)."""
        try:
            job = self.repo.get(job_id)
        except JobNotFound:
            return DeadLetterOutcome.UNKNOWN_JOB
        if job.status.terminal:
            return DeadLetterOutcome.ALREADY_TERMINAL
        if job.status is JobStatus.RUNNING and (job.lease_expires_at or 0) > self.clock():
            logger.info("dead letter for a job a live worker holds; leaving it", extra={"job_id": job_id})
            return DeadLetterOutcome.LIVE_WORKER
        try:
            self.repo.fail(
                job_id,
                ErrorInfo(
                    code=errors.RETRIES_EXHAUSTED,
                    message=f"the job was attempted {max(job.attempt, 1)} time(s) without finishing; "
                    "see the job log, then resubmit",
                ),
                log_key=job.log_key,
            )
        except InvalidTransition:
            return DeadLetterOutcome.ALREADY_TERMINAL
        return DeadLetterOutcome.FAILED

    def sweep(self) -> SweepCounts:
        """Close what would otherwise wait forever: expired upload windows and lost leases."""
        counts = SweepCounts()
        now = self.clock()
        for job in self.repo.due(JobStatus.PENDING, now):
            try:
                self.repo.fail(
                    job.job_id,
                    ErrorInfo(
                        code=errors.UPLOAD_EXPIRED,
                        message="no file was uploaded before the upload URL expired; create a new job",
                    ),
                    only_from=frozenset({JobStatus.PENDING}),
                )
                counts.upload_expired += 1
            except InvalidTransition:
                pass
        for job in self.repo.due(JobStatus.RUNNING, now):
            # Message first: a worker that picks it up before the flip takes the job over
            # (its lease is expired); if the flip then loses, the message is a duplicate.
            self.send_again(job)
            try:
                self.repo.requeue_expired(job.job_id, job.attempt)
                counts.requeued += 1
                logger.info("lease expired; job requeued", extra={"job_id": job.job_id, "attempt": job.attempt})
            except (InvalidTransition, StaleAttempt):
                pass
        return counts

    def worker_exited(self, worker_id: str) -> ExitCounts:
        """A Batch worker ended. Jobs it still held were not given back (killed, OOM, host
        lost): requeue them at once, or fail them when their attempts are used up
        (`max_attempts`). A worker that gave its jobs back or finished holds nothing."""
        counts = ExitCounts()
        max_attempts = self.settings.max_attempts
        for job in self.repo.due(JobStatus.RUNNING, now=float("inf")):
            if job.worker != worker_id:
                continue
            try:
                if job.attempt >= max_attempts:
                    self.repo.fail(
                        job.job_id,
                        ErrorInfo(
                            code=errors.RETRIES_EXHAUSTED,
                            message=f"the worker died on each of {job.attempt} "
                            "attempts (out of memory, or the instance was lost); see the job log",
                        ),
                        attempt=job.attempt,
                        log_key=job.log_key,
                    )
                    counts.failed += 1
                else:
                    self.send_again(job)
                    self.repo.requeue(job.job_id, job.attempt)
                    counts.requeued += 1
            except InvalidTransition:
                pass  # it moved on meanwhile (finished, cancelled, taken over)
        return counts
