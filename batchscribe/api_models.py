"""Request and response bodies of the HTTP API (also used by the CLI to read answers)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from batchscribe import sources
from batchscribe.models import (
    DEFAULT_PRIORITY,
    Callback,
    ErrorInfo,
    Job,
    JobOptions,
    JobStatus,
    Notice,
    Priority,
)


class CreateJobRequest(BaseModel):
    """Strict types at the boundary: `"1000"` is not a size, `true` is not a number."""

    model_config = ConfigDict(extra="forbid", strict=True)

    filename: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="the original file name (metadata only); for an upload, required",
    )
    content_type: str | None = Field(
        default=None, min_length=3, max_length=255, description="the media type of the upload; for an upload, required"
    )
    size_bytes: PositiveInt | None = Field(
        default=None,
        description="the exact size of the file to upload (required); with source_url, the most to fetch (default: "
        "the deployment's limit)",
    )
    source_url: str | None = Field(
        default=None,
        max_length=2048,
        description="input by URL instead of an upload: a public https:// URL (a presigned S3 URL for an s3:// "
        "object) the worker fetches; the job is queued at once and has no upload ticket",
    )
    options: JobOptions | None = Field(default=None, description="null or left out: the defaults")
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="an https:// URL on a public address that gets one signed POST when the job ends",
    )
    priority: Priority = Field(
        default=DEFAULT_PRIORITY,
        description="the job's priority class: workers take `high` first, yet `low` still advances (weighted "
        "6:3:1); `high` may be limited to some callers (403 `priority_not_allowed`)",
    )

    @property
    def job_options(self) -> JobOptions:
        return self.options or JobOptions()


class UploadTicket(BaseModel):
    url: str
    fields: dict[str, str] = Field(description="form fields to send before the file, unchanged")
    expires_at: str


class InputView(BaseModel):
    filename: str
    content_type: str
    size_bytes: int = Field(description="the file's size; for a source_url not fetched yet, the most to fetch")
    source_url: str | None = Field(default=None, description="input by URL: the URL without its query string")
    duration_seconds: float | None = Field(
        default=None, description="the audio's length in seconds, once a worker has opened the file"
    )


class ResultView(BaseModel):
    language: str
    duration_seconds: float
    engine: str
    model: str
    compute_seconds: float
    real_time_factor: float
    cost_usd: float | None = Field(
        default=None, description="the job's compute seconds at its worker pool's hourly price (null: no price set)"
    )
    urls: dict[str, str] = Field(description="format -> presigned GET URL")
    log_url: str | None = None
    urls_expire_at: str
    warnings: list[Notice] = Field(
        default_factory=list,
        description="notices about the transcript (code, message): no_speech (it is empty), low_confidence "
        "(much of it failed Whisper's checks: e.g. speech in another language than an English-only model knows)",
    )


class QueueView(BaseModel):
    """Where a queued job stands. Approximate by design (it costs a few reads): the jobs ahead
    are the higher classes' visible messages (SQS) plus the same class's queued jobs whose wait
    started earlier (DynamoDB); the estimate divides them by the pool's claims per minute over
    the last minutes, and is null while there is nothing to measure (no worker ran lately)."""

    priority: Priority = Field(description="the job's class (its queue)")
    position: int = Field(ge=1, description="approximate: 1 is next")
    ahead: dict[str, int] = Field(description="jobs ahead of it, per class, approximately")
    claims_per_minute: float = Field(description="the pool's measured throughput over the last minutes")
    estimated_start_at: str | None = Field(description="approximate; null when no throughput was measured lately")


class JobView(BaseModel):
    job_id: str
    status: JobStatus
    priority: Priority
    progress: int
    attempt: int
    created_at: str
    updated_at: str
    queued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    input: InputView
    options: JobOptions
    error: ErrorInfo | None = None
    result: ResultView | None = None
    log_url: str | None = None
    callback: Callback | None = Field(default=None, description="the job's webhook and its delivery so far")
    queue: QueueView | None = Field(default=None, description="GET /jobs/{id} of a queued job: where it stands")
    estimated_finish_at: str | None = Field(
        default=None,
        description="a running job: when it should end at the rate its progress has moved since it started "
        "(null until it has moved)",
    )

    @classmethod
    def of(cls, job: Job, **extra: Any) -> JobView:
        return cls(
            job_id=job.job_id,
            status=job.status,
            priority=job.priority,
            progress=job.progress,
            attempt=job.attempt,
            created_at=job.created_at,
            updated_at=job.updated_at,
            queued_at=job.queued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            input=InputView(
                filename=job.input.filename,
                content_type=job.input.content_type,
                size_bytes=job.input.size if job.input.size is not None else job.input.declared_size,
                source_url=sources.redacted(job.input.source_url) if job.input.source_url else None,
                duration_seconds=job.input.duration_seconds,
            ),
            options=job.options,
            error=job.error,
            callback=job.callback,
            **extra,
        )


class CreateJobResponse(JobView):
    upload: UploadTicket | None = Field(description="where to POST the file; null once the upload is done")


class InputUrl(BaseModel):
    """Where the owner can read back the job's own file (the web console's audio player)."""

    url: str = Field(description="a presigned GET of the uploaded file")
    content_type: str
    expires_at: str


class JobList(BaseModel):
    jobs: list[JobView]
    next_token: str | None = None


class PartUrl(BaseModel):
    part_number: int
    url: str = Field(description="PUT the part's bytes here; keep the response's ETag header")


class UploadedPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=128)
    size: int | None = Field(default=None, description="bytes S3 holds for it (in answers only)")


class MultipartTicket(BaseModel):
    """Upload a large file in parts: PUT each part (`part_size` bytes, the last one less) to
    its URL, then complete with every part's ETag. Asking again (after an interruption)
    returns the same upload, fresh URLs, and the parts S3 already holds: send only the rest."""

    upload_id: str
    part_size: int
    part_count: int
    parts: list[PartUrl] = Field(description="URLs for the parts not uploaded yet")
    uploaded: list[UploadedPart] = Field(description="parts S3 already holds (resume: skip them)")
    expires_at: str


class CompleteMultipartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    parts: list[UploadedPart] = Field(min_length=1, max_length=10_000)


class ModelInfo(BaseModel):
    name: str = Field(description="the value for options.model")
    pool: Literal["gpu", "cpu"] = Field(description="the worker pool that serves it")
    english_only: bool = Field(description="transcribes English only (language must be `en` or `auto`)")
    default_for: str = Field(description="which jobs run on it when they name no model")
    max_upload_bytes: int | None = Field(default=None, description="the largest upload its pool takes")


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str | None = Field(description="the model of a job without options.model (beyond the CPU pool's size)")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
