"""Job logic: plain Python that knows nothing of API Gateway, SQS events or Lambda.

Handlers parse their input, call one of these functions and map the result (or a domain
error) to their response. The repository, the media store and the queue are the only
things here that reach AWS.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger

from batchscribe import errors, keys, media_types
from batchscribe.api_models import (
    CreateJobRequest,
    CreateJobResponse,
    JobList,
    JobView,
    ResultView,
    UploadTicket,
)
from batchscribe.errors import InvalidTransition, JobNotFound, StaleAttempt
from batchscribe.models import ErrorInfo, InputInfo, Job, JobMessage, JobStatus, iso
from batchscribe.queue import JobQueue
from batchscribe.repository import JobRepository
from batchscribe.settings import ServiceSettings
from batchscribe.storage import MediaStore

logger = Logger(service="batchscribe", child=True)

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")


def sanitize_filename(name: str) -> str:
    """Keep the last path component, printable characters only, at most 255 of them."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().strip(".") or "upload"
    return name[:255]


@dataclass
class JobService:
    settings: ServiceSettings
    repo: JobRepository
    store: MediaStore
    queue: JobQueue
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: ServiceSettings, clock: Callable[[], float] = time.time) -> JobService:
        return cls(
            settings=settings,
            repo=JobRepository(settings.table_name, clock=clock),
            store=MediaStore(settings.bucket_name),
            queue=JobQueue(settings.jobs_queue_url),
            clock=clock,
        )

    # ---- API -------------------------------------------------------------------------

    def create_job(
        self, owner: str, request: CreateJobRequest, idempotency_key: str | None = None
    ) -> tuple[CreateJobResponse, bool]:
        content_type = media_types.normalize(request.content_type)
        if not media_types.is_supported(content_type):
            raise errors.UnsupportedMediaType(
                f"content type {content_type!r} is not an audio or video type this service decodes",
                details={"supported": sorted(media_types.SUPPORTED_CONTENT_TYPES)},
            )
        if request.size_bytes > self.settings.max_upload_bytes:
            raise errors.PayloadTooLarge(
                f"{request.size_bytes} bytes is over this deployment's limit of "
                f"{self.settings.max_upload_bytes} bytes; split the file or raise max_upload_bytes",
                details={"max_bytes": self.settings.max_upload_bytes},
            )
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise errors.BadRequest("Idempotency-Key must be 1 to 255 characters", code="invalid_idempotency_key")
        now = self.clock()
        job_id = keys.new_job_id()
        okey = keys.owner_key(owner)
        options = request.options  # model None: the worker's configured model
        job = Job(
            job_id=job_id,
            owner=owner,
            owner_key=okey,
            status=JobStatus.PENDING,
            created_at=iso(now),
            updated_at=iso(now),
            upload_expires_at=now + self.settings.upload_window_seconds,
            input=InputInfo(
                key=keys.upload_key(okey, job_id),
                filename=sanitize_filename(request.filename),
                content_type=content_type,
                declared_size=request.size_bytes,
            ),
            options=options,
            ttl=int(now) + self.settings.job_retention_days * 86400,
        )
        fingerprint = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
        job, created = self.repo.create(job, idempotency_key, fingerprint)
        return CreateJobResponse(**self.view(job).model_dump(), upload=self._upload_ticket(job)), created

    def _upload_ticket(self, job: Job) -> UploadTicket | None:
        remaining = int(job.upload_expires_at - self.clock())
        if job.status is not JobStatus.PENDING or remaining <= 0:
            return None
        post = self.store.presign_upload(
            job.input.key,
            job.input.content_type,
            min(job.input.declared_size, self.settings.max_upload_bytes),
            remaining,
        )
        return UploadTicket(url=post.url, fields=post.fields, expires_at=iso(job.upload_expires_at))

    def get_job(self, owner: str, job_id: str) -> JobView:
        return self.view(self.repo.get_for_owner(job_id, owner))

    def list_jobs(self, owner: str, status: JobStatus | None, limit: int, next_token: str | None) -> JobList:
        jobs, token = self.repo.list_for_owner(owner, status=status, limit=limit, next_token=next_token)
        return JobList(jobs=[self.view(job, with_urls=False) for job in jobs], next_token=token)

    def cancel_job(self, owner: str, job_id: str) -> JobView:
        job = self.repo.get_for_owner(job_id, owner)
        try:
            job = self.repo.cancel(job.job_id)
        except InvalidTransition as exc:
            raise InvalidTransition(
                f"job {job_id} is already {exc.details['status']}; only pending, queued or running jobs "
                "can be cancelled",
                code="job_not_cancellable",
                details=exc.details,
            ) from exc
        return self.view(job)

    def view(self, job: Job, with_urls: bool = True) -> JobView:
        expires = self.settings.result_url_seconds
        log_url = self.store.presign_get(job.log_key, expires) if with_urls and job.log_key else None
        result = None
        if job.result is not None:
            stem = job.input.filename.rsplit(".", 1)[0] or "transcript"
            urls = (
                {fmt: self.store.presign_get(key, expires, f"{stem}.{fmt}") for fmt, key in job.result.outputs.items()}
                if with_urls
                else {}
            )
            result = ResultView(
                language=job.result.language,
                duration_seconds=job.result.duration_seconds,
                engine=job.result.engine,
                model=job.result.model,
                compute_seconds=job.result.compute_seconds,
                real_time_factor=job.result.real_time_factor,
                urls=urls,
                log_url=log_url,
                urls_expire_at=iso(self.clock() + expires),
            )
        return JobView.of(job, result=result, log_url=log_url)

    # ---- upload intake ---------------------------------------------------------------

    def accept_upload(self, key: str) -> str:
        """Check an uploaded object and move its job pending -> queued. Returns what happened
        (for logs and tests). Safe to call any number of times for the same object."""
        parsed = keys.parse_upload_key(key)
        if parsed is None:
            logger.warning("object key is not an upload key the service made; deleting", extra={"key": key})
            self.store.delete(key)
            return "foreign_key"
        okey, job_id = parsed
        try:
            job = self.repo.get(job_id)
        except JobNotFound:
            logger.warning("upload for an unknown job; deleting", extra={"key": key})
            self.store.delete(key)
            return "unknown_job"
        if job.owner_key != okey:
            self.store.delete(key)
            return "unknown_job"
        if job.status is not JobStatus.PENDING:
            if job.status in (JobStatus.CANCELLED, JobStatus.FAILED) and job.queued_at is None:
                # Cancelled (or expired) before the upload: nothing will read it.
                self.store.delete(key)
            logger.info("duplicate or late upload notification", extra={"job_id": job_id, "status": job.status})
            return "duplicate"
        info = self.store.head(key)
        if info is None:
            return "object_missing"  # a notification for an object already removed
        limit = min(job.input.declared_size, self.settings.max_upload_bytes)
        problem: tuple[str, str] | None = None
        if info.size == 0:
            problem = (errors.UPLOAD_EMPTY, "the uploaded file is empty")
        elif info.size > limit:
            problem = (
                errors.UPLOAD_TOO_LARGE,
                f"the uploaded file is {info.size} bytes, more than the {limit} bytes declared when the "
                "job was created; create a new job with the right size_bytes",
            )
        elif info.content_type and media_types.normalize(info.content_type) != job.input.content_type:
            problem = (
                errors.UPLOAD_CONTENT_TYPE_MISMATCH,
                f"the upload's Content-Type {info.content_type!r} differs from the declared {job.input.content_type!r}",
            )
        if problem is not None:
            try:
                self.repo.fail(
                    job_id,
                    ErrorInfo(code=problem[0], message=problem[1]),
                    only_from=frozenset({JobStatus.PENDING}),
                )
            except InvalidTransition:
                return "duplicate"
            self.store.delete(key)
            logger.info("upload rejected", extra={"job_id": job_id, "code": problem[0]})
            return problem[0]
        # Send first, then flip the status: if we crash in between, the redelivered
        # notification finds the job still pending and does both again; a message that
        # arrives before the flip is put back by the worker (the job is not queued yet).
        self.queue_for(info.size).send(JobMessage(job_id=job_id, reason="upload"))
        try:
            self.repo.enqueue(job_id, info.size)
        except InvalidTransition:
            return "duplicate"
        logger.info("job queued", extra={"job_id": job_id, "size": info.size})
        return "queued"

    def send_again(self, job: Job) -> None:
        """Put a job's message back on its queue (requeues; duplicates are harmless)."""
        self.queue_for(job.input.size or job.input.declared_size).send(JobMessage(job_id=job.job_id, reason="requeue"))

    def queue_for(self, size: int) -> JobQueue:
        """Small uploads go to the CPU pool's queue (when the deployment has one)."""
        s = self.settings
        if s.small_jobs_queue_url and size <= s.small_job_max_bytes:
            return JobQueue(s.small_jobs_queue_url)
        return self.queue

    # ---- failure paths ---------------------------------------------------------------

    def dead_letter(self, job_id: str) -> str:
        """A job message exhausted its receives: the job fails, unless it already ended or a
        live worker still holds it (then the message was a duplicate)."""
        try:
            job = self.repo.get(job_id)
        except JobNotFound:
            return "unknown_job"
        if job.status.terminal:
            return "already_terminal"
        if job.status is JobStatus.RUNNING and (job.lease_expires_at or 0) > self.clock():
            logger.info("dead letter for a job a live worker holds; leaving it", extra={"job_id": job_id})
            return "live_worker"
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
            return "already_terminal"
        return "failed"

    def sweep(self) -> dict[str, int]:
        """Close what would otherwise wait forever: expired upload windows and lost leases."""
        counts = {"upload_expired": 0, "requeued": 0}
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
                counts["upload_expired"] += 1
            except InvalidTransition:
                pass
        for job in self.repo.due(JobStatus.RUNNING, now):
            # Message first: a worker that picks it up before the flip takes the job over
            # (its lease is expired); if the flip then loses, the message is a duplicate.
            self.send_again(job)
            try:
                self.repo.requeue_expired(job.job_id, job.attempt)
                counts["requeued"] += 1
                logger.info("lease expired; job requeued", extra={"job_id": job.job_id, "attempt": job.attempt})
            except (InvalidTransition, StaleAttempt):
                pass
        return counts


def worker_exited(service: JobService, worker_id: str, max_attempts: int) -> dict[str, int]:
    """A Batch worker ended (state change event). Jobs it still held were not given back
    (killed, OOM, host lost): requeue them at once, or fail them when their attempts are
    used up. A worker that gave its job back or finished holds nothing, so this is a no-op."""
    counts = {"requeued": 0, "failed": 0}
    for job in service.repo.due(JobStatus.RUNNING, now=float("inf")):
        if job.worker != worker_id:
            continue
        try:
            if job.attempt >= max_attempts:
                service.repo.fail(
                    job.job_id,
                    ErrorInfo(
                        code=errors.RETRIES_EXHAUSTED,
                        message=f"the worker died on each of {job.attempt} "
                        "attempts (out of memory, or the instance was lost); see the job log",
                    ),
                    attempt=job.attempt,
                    log_key=job.log_key,
                )
                counts["failed"] += 1
            else:
                service.send_again(job)
                service.repo.requeue(job.job_id, job.attempt)
                counts["requeued"] += 1
        except InvalidTransition:
            pass  # it moved on meanwhile (finished, cancelled, taken over)
    return counts
