"""What the API does with jobs: plain Python that knows nothing of API Gateway.

The API handler parses a request, calls one method here and maps the answer (or a domain
error) to a response. The repository and the media store are the only things here that
reach AWS.
"""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from batchscribe import errors, keys, languages, media_types, sources, webhooks
from batchscribe.api_models import (
    CompleteMultipartRequest,
    CreateJobRequest,
    CreateJobResponse,
    InputUrl,
    JobList,
    JobView,
    ModelInfo,
    ModelList,
    MultipartTicket,
    PartUrl,
    QueueView,
    ResultView,
    UploadedPart,
    UploadTicket,
)
from batchscribe.errors import InvalidTransition
from batchscribe.models import (
    DEFAULT_PRIORITY,
    PRIORITIES,
    Callback,
    InputInfo,
    Job,
    JobOptions,
    JobStatus,
    MessageReason,
    Priority,
    from_iso,
    iso,
)
from batchscribe.queue import JobDispatcher, JobQueue
from batchscribe.repository import Counters, JobRepository
from batchscribe.scaler import ScalerTrigger
from batchscribe.settings import ApiSettings, RoutingSettings
from batchscribe.storage import MediaStore

logger = Logger(service="batchscribe", child=True)

MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_PART_URLS = 1_000  # per answer (an API Gateway response is at most 6 MB): ask again for more

# controls, path separators, and the bidi overrides that make `exe.wav` display as `wav.exe`
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\\u202a-\u202e\u2066-\u2069]+")


def sanitize_filename(name: str) -> str:
    """Keep the last path component, printable characters only, at most 255 of them."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip().strip(".") or "upload"
    return name[:255]


@dataclass
class JobApi:
    settings: ApiSettings
    repo: JobRepository
    counters: Counters
    store: MediaStore
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: ApiSettings, clock: Callable[[], float] = time.time) -> JobApi:
        return cls(
            settings=settings,
            repo=JobRepository(settings.table_name, clock=clock),
            counters=Counters(settings.table_name, clock=clock),
            store=MediaStore(settings.bucket_name),
            clock=clock,
        )

    def create_job(
        self, owner: str, request: CreateJobRequest, idempotency_key: str | None = None
    ) -> tuple[CreateJobResponse, bool]:
        """A new job: pending with an upload ticket, or, given `source_url`, queued at once
        for a worker to fetch the file."""
        source = (
            sources.check_source(request.source_url, self.settings.allow_private).url if request.source_url else None
        )
        if source is None:
            missing = [f for f in ("filename", "content_type", "size_bytes") if getattr(request, f) is None]
            if missing:
                raise errors.BadRequest(
                    "the request is not valid; see details",
                    details=[
                        {"field": f, "message": "Field required (for an upload; or send source_url)", "type": "missing"}
                        for f in missing
                    ],
                )
        filename = sanitize_filename(request.filename or sources.filename_of(source or ""))
        if request.content_type is not None:
            content_type = media_types.normalize(request.content_type)
            if not media_types.is_supported(content_type):
                raise errors.UnsupportedMediaType(
                    f"content type {content_type!r} is not an audio or video type this service decodes",
                    details={"supported": sorted(media_types.SUPPORTED_CONTENT_TYPES)},
                )
        else:  # a source URL's: metadata only (the worker probes what it fetched)
            content_type = media_types.guess(filename) or "application/octet-stream"
        size = request.size_bytes or self.settings.max_upload_bytes
        if size > self.settings.max_upload_bytes:
            raise errors.PayloadTooLarge(
                f"{size} bytes is over this deployment's limit of "
                f"{self.settings.max_upload_bytes} bytes; split the file or raise max_upload_bytes",
                details={"max_bytes": self.settings.max_upload_bytes},
            )
        self._check_model(request.job_options)
        callback = (
            Callback(url=webhooks.check_url(request.callback_url, self.settings.allow_private).url)
            if request.callback_url
            else None
        )
        self._check_language(request.job_options)
        self._check_priority(owner, request)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise errors.BadRequest("Idempotency-Key must be 1 to 255 characters", code="invalid_idempotency_key")
        if source is not None and self.settings.routing is None:
            raise errors.BatchscribeError("the API was not given its queues (ApiSettings.routing); see its logs")
        if self.settings.create_rate_limit:
            # counted once the request is valid; a create refused here is not counted
            self.counters.count_create(owner, self.settings.create_rate_limit, self.settings.create_rate_window_seconds)
        now = self.clock()
        job_id = keys.new_job_id()
        okey = keys.owner_key(owner)
        job = Job(
            job_id=job_id,
            owner=owner,
            owner_key=okey,
            status=JobStatus.PENDING if source is None else JobStatus.QUEUED,
            priority=request.priority,
            created_at=iso(now),
            updated_at=iso(now),
            queued_at=None if source is None else iso(now),
            upload_expires_at=now + self.settings.upload_window_seconds if source is None else now,
            input=InputInfo(
                key=keys.upload_key(okey, job_id),
                filename=filename,
                content_type=content_type,
                declared_size=size,
                source_url=source,
            ),
            options=request.job_options,  # model None: the worker's configured model
            callback=callback,
            ttl=int(now) + self.settings.job_retention_days * 86400,
        )
        normalized = request.model_copy(update={"options": request.job_options})
        fingerprint = hashlib.sha256(normalized.model_dump_json().encode()).hexdigest()
        job, created = self.repo.create(job, idempotency_key, fingerprint)
        if created and source is not None:
            self._dispatch(job)
        return CreateJobResponse(**self.view(job).model_dump(), upload=self._upload_ticket(job)), created

    def _dispatch(self, job: Job) -> None:
        """A source-URL job is queued in its record already: send its message and wake the
        scaler. If either fails the job still starts: the sweeper re-sends the message of a
        job queued without a claim (`queued_redrive_seconds`), and the scaler runs on its
        schedule."""
        assert self.settings.routing is not None
        try:
            JobDispatcher(self.settings.routing).send(
                job.job_id, job.input.declared_size, MessageReason.UPLOAD, job.priority, model=job.options.model
            )
        except (ClientError, BotoCoreError):
            logger.warning("source-URL job not sent; the sweeper sends it", extra={"job_id": job.job_id}, exc_info=True)
            return
        try:
            ScalerTrigger(self.settings.scaler_function_name).wake()
        except (ClientError, BotoCoreError):
            logger.warning("could not wake the scaler", exc_info=True)

    def models(self) -> ModelList:
        """The models this deployment's pools serve (empty when the API was not told)."""
        s = self.settings
        offered = []
        if s.default_model:
            offered.append(
                ModelInfo(
                    name=s.default_model,
                    pool=s.default_pool,
                    english_only=languages.is_english_only(s.default_model),
                    default_for="every job without options.model"
                    + (f" over {s.small_job_max_bytes} bytes" if s.small_job_model and s.small_job_max_bytes else ""),
                )
            )
        if s.small_job_model and s.small_job_max_bytes:
            offered.append(
                ModelInfo(
                    name=s.small_job_model,
                    pool="cpu",
                    english_only=languages.is_english_only(s.small_job_model),
                    default_for=f"uploads up to {s.small_job_max_bytes} bytes without options.model",
                    max_upload_bytes=s.small_job_max_bytes,
                )
            )
        return ModelList(models=offered, default=s.default_model)

    def _check_model(self, options: JobOptions) -> None:
        """A job may name only a model some pool of this deployment serves: a worker cannot
        fetch another at run time, so it would fail later; say so now, with the choices."""
        offered = [m.name for m in self.models().models]
        if options.model is None or not offered or options.model in offered:
            return
        raise errors.BadRequest(
            f"model {options.model!r} is not served here; choose one of {', '.join(offered)} (GET /models), "
            "or leave options.model out",
            code=errors.UNSUPPORTED_MODEL,
            details={"field": "options.model", "supported": offered},
        )

    def _english_only(self, options: JobOptions) -> str | None:
        """The English-only model (`*.en`) the job may run on, if any. Without options.model a
        job runs on the deployment's model, or the CPU pool's for a small upload: both count."""
        candidates = [options.model] if options.model else [self.settings.default_model, self.settings.small_job_model]
        return next((m for m in candidates if m and languages.is_english_only(m)), None)

    def _check_language(self, options: JobOptions) -> None:
        """An English-only model transcribes English only: refuse another language, or a
        translation (into English, from English: it would hand back the same text), now rather
        than fail (or mis-transcribe) later."""
        model = self._english_only(options)
        if options.task == "translate" and model is not None:
            raise errors.BadRequest(
                f"task 'translate' needs a multilingual model, and {model!r} is English-only (it transcribes "
                "English speech, and translating English to English gives the same text); send task 'transcribe', "
                "or choose a multilingual model",
                code=errors.UNSUPPORTED_TASK,
                details={"field": "options.task", "model": model, "supported": ["transcribe"]},
            )
        if options.language in (languages.AUTO, languages.ENGLISH):
            return
        if model is not None:
            raise errors.BadRequest(
                f"language {options.language!r} needs a multilingual model, and {model!r} is English-only; "
                "send language 'en' or 'auto', or choose a multilingual model",
                code=errors.UNSUPPORTED_LANGUAGE,
                details={"field": "options.language", "model": model, "supported": ["auto", "en"]},
            )

    def _check_priority(self, owner: str, request: CreateJobRequest) -> None:
        allowed = self.settings.high_priority_owners
        if request.priority == "high" and allowed is not None and owner not in allowed:
            raise errors.Forbidden(
                "this caller may not create `high` priority jobs; send `normal` or `low`, or ask the operator "
                "to add the caller to high_priority_owners",
                code=errors.PRIORITY_NOT_ALLOWED,
                details={"field": "priority", "allowed": ["normal", "low"]},
            )

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

    # ---- multipart uploads -------------------------------------------------------------

    def _pending_upload(self, owner: str, job_id: str) -> tuple[Job, int]:
        """The caller's job, still waiting for its file, and the seconds its window has left."""
        job = self.repo.get_for_owner(job_id, owner)
        remaining = int(job.upload_expires_at - self.clock())
        if job.status is not JobStatus.PENDING:
            raise InvalidTransition(
                f"job {job_id} is {job.status.value}: its file was uploaded already (or the job ended)",
                code="job_not_pending",
                details={"status": job.status.value},
            )
        if remaining <= 0:
            raise InvalidTransition(
                f"the upload window of job {job_id} closed; create a new job", code="upload_window_closed"
            )
        return job, remaining

    def part_size(self, size: int) -> int:
        """Parts of `multipart_part_bytes`, larger when the file would need over 10 000."""
        mib = 1024 * 1024
        needed = -(-size // MAX_PARTS)
        return max(self.settings.multipart_part_bytes, -(-needed // mib) * mib)

    def start_multipart(self, owner: str, job_id: str) -> MultipartTicket:
        """Start (or, asked again, resume) the multipart upload of a pending job's file."""
        job, remaining = self._pending_upload(owner, job_id)
        key = job.input.key
        upload_id = job.input.multipart_upload_id
        uploaded = self.store.uploaded_parts(key, upload_id) if upload_id else None
        if upload_id is None or uploaded is None:  # none yet, or it expired: a new one
            new_id = self.store.start_multipart(key, job.input.content_type)
            if self.repo.set_multipart(job_id, new_id, expected=upload_id):
                upload_id, uploaded = new_id, []
            else:  # a concurrent request recorded its own first: use that one
                self.store.abort_multipart(key, new_id)
                job, remaining = self._pending_upload(owner, job_id)
                upload_id = job.input.multipart_upload_id
                uploaded = self.store.uploaded_parts(key, upload_id) if upload_id else None
                if upload_id is None or uploaded is None:
                    raise InvalidTransition("the upload changed meanwhile; ask again", code="upload_conflict")
        size = job.input.declared_size
        part_size = self.part_size(size)
        count = max(1, -(-size // part_size))
        done = {n for n, _, _ in uploaded}
        todo = [n for n in range(1, count + 1) if n not in done][:MAX_PART_URLS]
        return MultipartTicket(
            upload_id=upload_id,
            part_size=part_size,
            part_count=count,
            parts=[PartUrl(part_number=n, url=self.store.presign_part(key, upload_id, n, remaining)) for n in todo],
            uploaded=[UploadedPart(part_number=n, etag=etag, size=sz) for n, etag, sz in uploaded],
            expires_at=iso(job.upload_expires_at),
        )

    def complete_multipart(self, owner: str, job_id: str, request: CompleteMultipartRequest) -> JobView:
        """Join the parts into the job's file; its arrival moves the job on, like a POST."""
        job, _ = self._pending_upload(owner, job_id)
        upload_id = job.input.multipart_upload_id
        if upload_id is None:
            raise InvalidTransition(
                f"job {job_id} has no multipart upload; start one first", code="no_multipart_upload"
            )
        numbers = [p.part_number for p in request.parts]
        if numbers != sorted(set(numbers)):
            raise errors.BadRequest("parts must be listed once each, in ascending part_number", code="invalid_parts")
        try:
            self.store.complete_multipart(job.input.key, upload_id, [(p.part_number, p.etag) for p in request.parts])
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
                raise errors.BadRequest(
                    f"S3 refused the parts ({code}): ask for the upload again to see which parts it holds",
                    code="invalid_parts",
                ) from exc
            if code == "NoSuchUpload":
                raise InvalidTransition(
                    "the multipart upload is gone; start again", code="no_multipart_upload"
                ) from exc
            raise
        self.repo.set_multipart(job_id, None, expected=upload_id)
        return self.view(self.repo.get(job_id))

    def abort_multipart(self, owner: str, job_id: str) -> JobView:
        job, _ = self._pending_upload(owner, job_id)
        upload_id = job.input.multipart_upload_id
        if upload_id is not None:
            self.store.abort_multipart(job.input.key, upload_id)
            self.repo.set_multipart(job_id, None, expected=upload_id)
        return self.view(self.repo.get(job_id))

    def get_job(self, owner: str, job_id: str) -> JobView:
        job = self.repo.get_for_owner(job_id, owner)
        view = self.view(job)
        if job.status is JobStatus.QUEUED and self.settings.routing is not None:
            try:
                view.queue = self.queue_position(job, self.settings.routing)
            except (ClientError, BotoCoreError):  # approximate and optional: never fail the GET for it
                view.queue = None
        return view

    def input_url(self, owner: str, job_id: str) -> InputUrl:
        """A presigned GET of the caller's own uploaded file: 404 for anyone else's job, and
        while (or once) S3 holds no file for it (not uploaded yet, or expired by its lifecycle)."""
        job = self.repo.get_for_owner(job_id, owner)
        if self.store.head(job.input.key) is None:
            raise errors.JobNotFound(
                f"job {job_id} has no uploaded file (not uploaded yet, or expired)", code="input_not_found"
            )
        expires = self.settings.result_url_seconds
        return InputUrl(
            url=self.store.presign_get(job.input.key, expires),
            content_type=job.input.content_type,
            expires_at=iso(self.clock() + expires),
        )

    def queue_position(self, job: Job, routing: RoutingSettings) -> QueueView:
        """Where a queued job stands, approximately and cheaply: the higher classes' visible
        messages (one GetQueueAttributes each), the same class's queued jobs whose wait started
        earlier (one bounded index count), and the pool's claims per minute (one BatchGetItem of
        per-minute counters the workers keep)."""
        classes = JobDispatcher(routing).classes_for(job.input.size or job.input.declared_size)
        higher = PRIORITIES[: PRIORITIES.index(job.priority)]
        ahead: dict[str, int] = {
            p: JobQueue(classes[p]).depth()[0] for p in higher if classes[p] != classes[job.priority]
        }
        ahead[job.priority] = self.repo.queued_ahead(job.job_id, job.priority)
        position = sum(ahead.values()) + 1
        rate = self.counters.claims_per_minute(classes[DEFAULT_PRIORITY])
        estimate = iso(self.clock() + 60 * (position - 1) / rate) if rate > 0 else None
        return QueueView(
            priority=job.priority,
            position=position,
            ahead=ahead,
            claims_per_minute=round(rate, 2),
            estimated_start_at=estimate,
        )

    def list_jobs(
        self,
        owner: str,
        status: JobStatus | None,
        limit: int,
        next_token: str | None,
        priority: Priority | None = None,
    ) -> JobList:
        jobs, token = self.repo.list_for_owner(
            owner, status=status, priority=priority, limit=limit, next_token=next_token
        )
        return JobList(jobs=[self.view(job, with_urls=False) for job in jobs], next_token=token)

    def cancel_job(self, owner: str, job_id: str) -> JobView:
        job = self.repo.get_for_owner(job_id, owner)
        try:
            job = self.repo.cancel(job.job_id)
        except InvalidTransition as exc:
            raise InvalidTransition(
                f"job {job_id} is already {exc.details['status']}; only pending, queued or running jobs "
                "can be cancelled",
                code=errors.JOB_NOT_CANCELLABLE,
                details=exc.details,
            ) from exc
        return self.view(job)

    def view(self, job: Job, with_urls: bool = True) -> JobView:
        expires = self.settings.result_url_seconds
        # Every attempt writes its lines to the job's log object from its first moment, so a
        # job whose worker was killed (and which never recorded `log_key`) still shows its log.
        log_key = job.log_key or (keys.log_key(job.owner_key, job.job_id) if job.attempt > 0 else None)
        log_url = self.store.presign_get(log_key, expires) if with_urls and log_key else None
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
                cost_usd=job.result.cost_usd,
                urls=urls,
                log_url=log_url,
                urls_expire_at=iso(self.clock() + expires),
                warnings=job.result.warnings,
            )
        return JobView.of(job, result=result, log_url=log_url, estimated_finish_at=self._finish_estimate(job))

    def _finish_estimate(self, job: Job) -> str | None:
        """When a running job should end, at the rate its progress moved since its claim."""
        if job.status is not JobStatus.RUNNING or not job.started_at or not 0 < job.progress < 100:
            return None
        now = self.clock()
        elapsed = max(0.0, now - from_iso(job.started_at))
        return iso(now + elapsed * (100 - job.progress) / job.progress)
