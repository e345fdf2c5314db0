"""Upload intake: an object landed under uploads/ -> check it, queue its job.

Delivery is at least once (S3 -> SQS -> on_upload): every path here is safe to repeat.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from aws_lambda_powertools import Logger

from batchscribe import errors, keys, media_types
from batchscribe.errors import InvalidTransition, JobNotFound
from batchscribe.models import ErrorInfo, Job, JobStatus, MessageReason
from batchscribe.queue import JobDispatcher
from batchscribe.repository import JobRepository
from batchscribe.scaler import ScalerTrigger
from batchscribe.settings import IntakeSettings
from batchscribe.storage import MediaStore, ObjectInfo

logger = Logger(service="batchscribe", child=True)


class UploadOutcome(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # a repeated or late notification; nothing changed
    FOREIGN_KEY = "foreign_key"  # not a key the service made: deleted
    UNKNOWN_JOB = "unknown_job"  # no such job (or another owner's key): deleted
    OBJECT_MISSING = "object_missing"  # the object is gone already
    UPLOAD_EMPTY = errors.UPLOAD_EMPTY
    UPLOAD_TOO_LARGE = errors.UPLOAD_TOO_LARGE
    UPLOAD_CONTENT_TYPE_MISMATCH = errors.UPLOAD_CONTENT_TYPE_MISMATCH
    INPUT_CHANGED = errors.INPUT_CHANGED  # uploaded again after intake checked it: the job fails


@dataclass
class UploadIntake:
    settings: IntakeSettings
    repo: JobRepository
    store: MediaStore
    dispatcher: JobDispatcher
    scaler: ScalerTrigger
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: IntakeSettings, clock: Callable[[], float] = time.time) -> UploadIntake:
        return cls(
            settings=settings,
            repo=JobRepository(settings.table_name, clock=clock),
            store=MediaStore(settings.bucket_name),
            dispatcher=JobDispatcher(settings),
            scaler=ScalerTrigger(settings.scaler_function_name),
            clock=clock,
        )

    def accept(self, key: str) -> UploadOutcome:
        """Check an uploaded object and move its job pending -> queued. Safe to call any
        number of times for the same object."""
        parsed = keys.parse_upload_key(key)
        if parsed is None:
            logger.warning("object key is not an upload key the service made; deleting", extra={"key": key})
            self.store.delete(key)
            return UploadOutcome.FOREIGN_KEY
        okey, job_id = parsed
        try:
            job = self.repo.get(job_id)
        except JobNotFound:
            logger.warning("upload for an unknown job; deleting", extra={"key": key})
            self.store.delete(key)
            return UploadOutcome.UNKNOWN_JOB
        if job.owner_key != okey:
            self.store.delete(key)
            return UploadOutcome.UNKNOWN_JOB
        if job.status is JobStatus.QUEUED and self._replaced(job, key):
            return UploadOutcome.INPUT_CHANGED
        if job.status is not JobStatus.PENDING:
            if job.status in (JobStatus.CANCELLED, JobStatus.FAILED) and job.queued_at is None:
                # Cancelled (or expired) before the upload: nothing will read it.
                self.store.delete(key)
            logger.info("duplicate or late upload notification", extra={"job_id": job_id, "status": job.status})
            return UploadOutcome.DUPLICATE
        info = self.store.head(key)
        if info is None:
            return UploadOutcome.OBJECT_MISSING  # a notification for an object already removed
        problem = self._problem(job, info)
        if problem is not None:
            code, message = problem
            try:
                self.repo.fail(job_id, ErrorInfo(code=code, message=message), only_from=frozenset({JobStatus.PENDING}))
            except InvalidTransition:
                return UploadOutcome.DUPLICATE
            self.store.delete(key)
            logger.info("upload rejected", extra={"job_id": job_id, "code": code})
            return UploadOutcome(code)
        # Record, then send: the job is queued before its message exists, so the worker that
        # receives the message can claim it at once. A message lost in between (the send
        # failed, or this function died) is what the sweeper covers: it re-sends the message
        # of a job queued without a claim (`queued_redrive_seconds`).
        try:
            # the object is pinned: the worker downloads it only if its ETag is still this one
            self.repo.enqueue(job_id, info.size, etag=info.etag, version_id=info.version_id)
        except InvalidTransition:
            return UploadOutcome.DUPLICATE
        self.dispatcher.send(job_id, info.size, MessageReason.UPLOAD, job.priority, model=job.options.model)
        logger.info("job queued", extra={"job_id": job_id, "size": info.size})
        return UploadOutcome.QUEUED

    def _replaced(self, job: Job, key: str) -> bool:
        """A notification for a queued job: a duplicate of the one that queued it, or a second
        upload to the same presigned key, which replaced the object intake checked (its size
        and type unchecked). The second fails the job `input_changed`; the worker's download is
        conditioned on the pinned ETag too, for an upload that lands while it runs."""
        if job.input.etag is None:
            return False  # queued before ETags were recorded
        info = self.store.head(key)
        if info is None or (info.etag == job.input.etag and info.version_id == job.input.version_id):
            return False
        try:
            self.repo.fail(
                job.job_id,
                ErrorInfo(
                    code=errors.INPUT_CHANGED,
                    message="the file was uploaded again after the job was queued, so the job no longer knows "
                    "which content to transcribe; create a new job for each file",
                ),
                attempt=job.attempt,
                only_from=frozenset({JobStatus.QUEUED}),
            )
        except InvalidTransition:
            return False  # claimed meanwhile: the worker's conditional download decides
        logger.warning("upload replaced after intake; job failed", extra={"job_id": job.job_id})
        return True

    def _problem(self, job: Job, info: ObjectInfo) -> tuple[str, str] | None:
        limit = min(job.input.declared_size, self.settings.max_upload_bytes)
        if info.size == 0:
            return errors.UPLOAD_EMPTY, "the uploaded file is empty"
        if info.size > limit:
            return (
                errors.UPLOAD_TOO_LARGE,
                f"the uploaded file is {info.size} bytes, more than the {limit} bytes declared when the "
                "job was created; create a new job with the right size_bytes",
            )
        if info.content_type and media_types.normalize(info.content_type) != job.input.content_type:
            return (
                errors.UPLOAD_CONTENT_TYPE_MISMATCH,
                f"the upload's Content-Type {info.content_type!r} differs from the declared {job.input.content_type!r}",
            )
        return None

    def wake_scaler(self) -> None:
        """New work: run the scaler now rather than at its next tick (best effort; the
        schedule is the safety net)."""
        try:
            self.scaler.wake()
        except Exception:
            logger.warning("could not wake the scaler", exc_info=True)
