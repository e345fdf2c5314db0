"""Lifecycle: what closes jobs that nothing else would. Dead letters (a message used up its
receives), the sweeper (expired upload windows, lost leases, queued jobs whose message was
lost) and worker exits (a Batch worker ended while it still held jobs)."""

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
    REDRIVEN = "redriven"  # the message ran out of receives before the job ran out of attempts: sent again
    NOT_UPLOADED = "not_uploaded"  # still pending: the sweeper closes it when its upload window does


@dataclass
class SweepCounts:
    upload_expired: int = 0
    requeued: int = 0
    redriven: int = 0
    queue_timeout: int = 0
    slots_freed: int = 0  # owners' running slots held by jobs no longer running
    owners_running: int = 0  # owners with running jobs under a running cap (gauges, not counts)
    max_running_per_owner: int = 0  # the most running jobs one owner has


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
        """Put a job's message back on its class's queue (duplicates are harmless)."""
        self.dispatcher.send(
            job.job_id,
            job.input.size or job.input.declared_size,
            MessageReason.REQUEUE,
            job.priority,
            model=job.options.model,
        )

    def dead_letter(self, job_id: str) -> DeadLetterOutcome:
        """A job message exhausted its SQS receives. SQS counts receives, not attempts: a
        message that full workers put back, or that a worker took and died before claiming,
        reaches the DLQ with the job barely tried. The job's own counters decide: while it has
        attempts (`max_attempts`) and re-sends (`max_redrives`) left its message is sent
        again; after that it fails `retries_exhausted`. A job that ended, or that a live worker
        holds, is left alone (the message was a duplicate)."""
        try:
            job = self.repo.get(job_id)
        except JobNotFound:
            return DeadLetterOutcome.UNKNOWN_JOB
        if job.status.terminal:
            return DeadLetterOutcome.ALREADY_TERMINAL
        if job.status is JobStatus.PENDING:
            return DeadLetterOutcome.NOT_UPLOADED
        now = self.clock()
        if job.status is JobStatus.RUNNING and (job.lease_expires_at or 0) > now:
            logger.info("dead letter for a job a live worker holds; leaving it", extra={"job_id": job_id})
            return DeadLetterOutcome.LIVE_WORKER
        if job.attempt < self.settings.max_attempts and job.redrives < self.settings.max_redrives:
            self.send_again(job)
            try:
                if job.status is JobStatus.QUEUED:
                    self.repo.redrive(job_id, job.attempt, job.redrives, self._next_redrive_at(job, now))
                else:  # running with an expired lease: the worker is gone
                    self.repo.requeue_expired(job_id, job.attempt)
            except (InvalidTransition, StaleAttempt):
                pass  # it moved on meanwhile; the message sent is a duplicate a worker drops
            logger.info("dead letter with attempts left; sent again", extra={"job_id": job_id})
            return DeadLetterOutcome.REDRIVEN
        try:
            self.repo.fail(
                job_id,
                ErrorInfo(
                    code=errors.RETRIES_EXHAUSTED,
                    message=f"the job was attempted {max(job.attempt, 1)} time(s) and its message sent "
                    f"{job.redrives + 1} time(s) without finishing; see the job log, then resubmit",
                ),
                log_key=job.log_key,
            )
        except InvalidTransition:
            return DeadLetterOutcome.ALREADY_TERMINAL
        return DeadLetterOutcome.FAILED

    def _next_redrive_at(self, job: Job, now: float) -> float:
        """When a queued job re-sent `job.redrives + 1` times is due again: each wait doubles
        the last (`base * 2**(k+1)` after the first wait of `base`)."""
        base = self.settings.queued_redrive_seconds
        return now + base * 2 ** (job.redrives + 1) - base

    def sweep(self) -> SweepCounts:
        """Close what would otherwise wait forever: expired upload windows, lost leases,
        queued jobs whose message is gone (deleted by hand, expired, or a send that failed),
        and owners' running slots held by jobs that are no longer running."""
        counts = SweepCounts()
        now = self.clock()
        self._redrive_queued(now, counts)
        counts.slots_freed = self.repo.slots.free_stale(self.repo.still_running)
        running = [len(ids) for _, ids in self.repo.slots.running()]
        counts.owners_running = sum(1 for n in running if n)
        counts.max_running_per_owner = max(running, default=0)
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
        # `due` reads each running job's item and yields it only once its exact lease expired
        # (the index holds a coarser time, so that heartbeats do not move the entry)
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

    def _redrive_queued(self, now: float, counts: SweepCounts) -> None:
        """A job queued for `queued_redrive_seconds` without a claim gets its message sent
        again, to the queue its size routes it to; the next wait doubles (a long backlog costs
        a few duplicate messages, which workers drop). After `max_redrives` re-sends it fails
        `queue_timeout`. SQS cannot say whether a job's message still exists, so the sweeper
        re-sends rather than asks; duplicates are harmless (the claim is conditional)."""
        base = self.settings.queued_redrive_seconds
        for job in self.repo.due(JobStatus.QUEUED, now - base):
            try:
                if job.redrives >= self.settings.max_redrives:
                    waited = base * (2 ** (job.redrives + 1) - 1)
                    self.repo.fail(
                        job.job_id,
                        ErrorInfo(
                            code=errors.QUEUE_TIMEOUT,
                            message=f"no worker started the job in {waited} s of waiting (its message was sent "
                            f"again {job.redrives} time(s)); check the worker pool, then resubmit",
                        ),
                        attempt=job.attempt,
                        only_from=frozenset({JobStatus.QUEUED}),
                    )
                    counts.queue_timeout += 1
                    logger.warning("queued job never started; failed", extra={"job_id": job.job_id})
                    continue
                # Message first, then the record: if the write loses (claimed meanwhile, or
                # another sweeper counted it), the extra message is a duplicate a worker drops.
                self.send_again(job)
                self.repo.redrive(job.job_id, job.attempt, job.redrives, self._next_redrive_at(job, now))
                counts.redriven += 1
                logger.info("queued job's message sent again", extra={"job_id": job.job_id, "n": job.redrives + 1})
            except InvalidTransition:
                pass  # claimed, cancelled or counted by another sweep meanwhile

    def worker_exited(self, worker_id: str) -> ExitCounts:
        """A Batch worker ended. Jobs it still held were not given back (killed, OOM, host
        lost): requeue them at once, or fail them when their attempts are used up
        (`max_attempts`). A worker that gave its jobs back or finished holds nothing."""
        counts = ExitCounts()
        max_attempts = self.settings.max_attempts
        for job in self.repo.due(JobStatus.RUNNING, now=float("inf"), worker=worker_id):
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
