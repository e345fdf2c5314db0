"""The job model: what a job is, what it may become, and the messages that move it.

Everything here is plain pydantic: the API, the Lambdas, the worker, the CLI and the local
stack all import these types, so a field means the same thing everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from batchscribe.languages import AUTO, LANGUAGE_CHOICES


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(set(JobStatus) - TERMINAL_STATUSES)

OutputFormat = Literal["json", "txt", "srt", "vtt"]
ALL_FORMATS: tuple[OutputFormat, ...] = ("json", "txt", "srt", "vtt")
Task = Literal["transcribe", "translate"]

# A job's priority class: its queue in each pool, and its turn in the workers' weighted receive
# (batchscribe.queue.ClassQueues). Highest first.
EngineName = Literal["faster-whisper", "openai-whisper"]  # faster-whisper (CTranslate2) is the default
ENGINE_NAMES: tuple[EngineName, ...] = ("faster-whisper", "openai-whisper")
Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
DEFAULT_PRIORITY: Priority = "normal"


class JobOptions(BaseModel):
    """What the client asks of the transcription. Unknown keys are refused, not ignored, and
    types are strict: `"yes"` is not a boolean (the API answers 400 with the field)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    language: str = Field(
        default=AUTO,
        description="one of Whisper's language codes such as `en`, or `auto` to detect",
        json_schema_extra={"enum": list(LANGUAGE_CHOICES)},
    )
    task: Task = "transcribe"
    model: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")] | None = Field(
        default=None, description="model name; the worker pool's configured model when omitted"
    )
    word_timestamps: bool = False
    formats: list[OutputFormat] = Field(default_factory=lambda: list(ALL_FORMATS), min_length=1)
    initial_prompt: Annotated[str, StringConstraints(max_length=1000)] | None = None
    share_windows: bool = Field(
        default=True,
        description="a short job's speech may share a 30 s window with other short jobs' speech (packing: a 6 s "
        "job then takes 6.5 s of a window instead of all 30; each job gets only its own words back). "
        "The decoder reads the whole window, so beside other jobs the same file can come out with a word or a "
        "punctuation mark different. `false`: the job's windows are its own, and the same file with the same "
        "options gives the same transcript whatever runs beside it (short files cost more GPU time: 2.7x the encoder "
        "work on the benchmark's mixes of short jobs).",
    )
    channels: Literal["mix", "split"] = Field(
        default="mix",
        description="`split`: channel identification. Each channel of a multi-channel file (a call recorded one "
        "speaker per channel) is transcribed on its own and the segments merged by time, each tagged with its "
        "`channel` (and `[Channel N]` in txt/srt, a `<v Channel N>` voice in vtt). `mix`: one mono mix.",
    )

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if value not in LANGUAGE_CHOICES:
            raise ValueError("must be 'auto' or one of Whisper's language codes such as 'en', 'de', 'yue'")
        return value

    @field_validator("formats")
    @classmethod
    def _dedupe(cls, value: list[OutputFormat]) -> list[OutputFormat]:
        return list(dict.fromkeys(value))


class ErrorInfo(BaseModel):
    code: str
    message: str


class InputInfo(BaseModel):
    key: str
    filename: str
    content_type: str
    declared_size: int
    size: int | None = None
    etag: str | None = Field(
        default=None,
        description="the uploaded object's ETag, recorded at intake: the worker downloads with IfMatch on it, so "
        "a second upload to the same key cannot swap the content under a queued job (`input_changed`)",
    )
    version_id: str | None = Field(default=None, description="the object's VersionId, when the bucket versions")
    multipart_upload_id: str | None = Field(default=None, description="the S3 multipart upload under way, if any")
    duration_seconds: float | None = Field(default=None, description="the audio's length, once a worker opened it")
    source_url: str | None = Field(
        default=None, description="input by URL: the worker fetches it (no upload); `declared_size` is its cap"
    )


class Callback(BaseModel):
    """A job's webhook and how its delivery went."""

    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        default="pending", description="pending until the job ends and the POST is answered 2xx (delivered) or given up"
    )
    attempts: int = 0
    last_status: int | None = Field(default=None, description="the receiver's HTTP status on the last try")
    last_error: str | None = None
    delivered_at: str | None = None


class Notice(BaseModel):
    """Something the user should know about a result (a code of batchscribe.errors and a
    sentence): the job succeeded, but the transcript may not be what they expect."""

    code: str
    message: str


class ResultSummary(BaseModel):
    language: str
    duration_seconds: float
    outputs: dict[str, str] = Field(description="format -> S3 key")
    engine: str
    model: str
    compute_seconds: float
    real_time_factor: float = Field(description="compute seconds / audio seconds; < 1 is faster than real time")
    segments: int = 0
    cost_usd: float | None = Field(
        default=None,
        description="compute_seconds x the worker pool's hourly price / 3600: the job's share of the instance "
        "while it was decoded (idle time and cold starts are not in it); null where the pool has no price",
    )
    warnings: list[Notice] = Field(default_factory=list, description="what the user should know about this result")


class Job(BaseModel):
    """One job record, as stored in DynamoDB (minus the internal index attributes)."""

    job_id: str
    owner: str
    owner_key: str
    status: JobStatus
    priority: Priority = DEFAULT_PRIORITY
    created_at: str
    updated_at: str
    queued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempt: int = 0
    redrives: int = Field(default=0, description="times the sweeper re-sent the message of this queued period")
    callback: Callback | None = None
    progress: int = 0
    worker: str | None = None
    lease_expires_at: float | None = None
    upload_expires_at: float
    input: InputInfo
    options: JobOptions
    result: ResultSummary | None = None
    error: ErrorInfo | None = None
    log_key: str | None = None
    ttl: int


class ResultBrief(BaseModel):
    """A finished job's result in a summary: what it is, not where it is (URLs expire:
    GET the job for them)."""

    language: str
    duration_seconds: float
    compute_seconds: float
    real_time_factor: float
    cost_usd: float | None = None
    formats: list[str] = Field(description="the output formats written, sorted")


class JobSummary(BaseModel):
    """What is said of a job that ended, the same everywhere it is said: the detail of the
    "Job Status Change" event on EventBridge and the body of a webhook callback."""

    job_id: str
    owner: str
    status: JobStatus
    priority: Priority
    attempt: int
    created_at: str
    finished_at: str | None
    filename: str
    error: ErrorInfo | None = None
    result: ResultBrief | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready; `error` and `result` left out where the job has none."""
        absent = {name for name in ("error", "result") if getattr(self, name) is None}
        return self.model_dump(mode="json", exclude=absent)

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        r = job.result
        brief = None
        if r is not None:
            brief = ResultBrief(
                language=r.language,
                duration_seconds=r.duration_seconds,
                compute_seconds=r.compute_seconds,
                real_time_factor=r.real_time_factor,
                cost_usd=r.cost_usd,
                formats=sorted(r.outputs),
            )
        return cls(
            job_id=job.job_id,
            owner=job.owner,
            status=job.status,
            priority=job.priority,
            attempt=job.attempt,
            created_at=job.created_at,
            finished_at=job.finished_at,
            filename=job.input.filename,
            error=job.error,
            result=brief,
        )


class MessageReason(StrEnum):
    UPLOAD = "upload"
    REQUEUE = "requeue"
    GIVE_BACK = "give_back"
    CALLBACK = "callback"  # on the webhooks queue: the job ended and has a callback to deliver


class JobMessage(BaseModel):
    """The body of a message on the jobs queue. Only the id travels: the record is the truth."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    reason: MessageReason = MessageReason.UPLOAD


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(stamp: str) -> float:
    """The Unix time of a stamp `iso` wrote."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
