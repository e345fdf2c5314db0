"""Domain errors. Each carries a stable machine-readable code; handlers map classes to HTTP
statuses in one table (lambdas/api/handler.py) and never look at message text."""

from __future__ import annotations

from typing import Any


class BatchscribeError(Exception):
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class BadRequest(BatchscribeError):
    code = "invalid_request"


class Unauthenticated(BatchscribeError):
    """No caller identity: the API must never invent an owner."""

    code = "missing_identity"


class Forbidden(BatchscribeError):
    """The caller may not do this (e.g. create a `high` priority job when not allowed to)."""

    code = "forbidden"


class RateLimited(BatchscribeError):
    """Over a per-owner limit; `retry_after` says when the next attempt can succeed (seconds)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None, details: Any = None) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class OwnerAtCap(BatchscribeError):
    """The job's owner already runs its cap of jobs: the job stays queued (never an API answer)."""

    code = "owner_at_cap"


PRIORITY_NOT_ALLOWED = "priority_not_allowed"


JOB_NOT_CANCELLABLE = "job_not_cancellable"


class JobNotFound(BatchscribeError):
    code = "job_not_found"


class InvalidTransition(BatchscribeError):
    """A conditional write found the job in a state the transition may not start from."""

    code = "invalid_transition"


class StaleAttempt(InvalidTransition):
    """A worker wrote with an attempt number that is no longer the job's (it lost its lease)."""

    code = "stale_attempt"


class JobAlreadyExists(BatchscribeError):
    code = "job_exists"


class IdempotencyConflict(BatchscribeError):
    code = "idempotency_key_reused"


class PayloadTooLarge(BatchscribeError):
    code = "file_too_large"


class UnsupportedMediaType(BatchscribeError):
    code = "unsupported_media_type"


# Codes a job can fail with. Stable: clients and alarms match on them.
UPLOAD_TOO_LARGE = "upload_too_large"
UPLOAD_EMPTY = "upload_empty"
UPLOAD_EXPIRED = "upload_expired"
UPLOAD_CONTENT_TYPE_MISMATCH = "upload_content_type_mismatch"
RETRIES_EXHAUSTED = "retries_exhausted"
INVALID_MEDIA = "invalid_media"
NO_AUDIO = "no_audio"
TOO_LONG = "too_long"
QUEUE_TIMEOUT = "queue_timeout"  # queued through every redrive without a worker taking it
INPUT_CHANGED = "input_changed"  # the upload was replaced after intake (ETag differs from input.etag)
UNSUPPORTED_MODEL = "unsupported_model"  # the job asked for a model no pool of this deployment serves
INPUT_MISSING = "input_missing"  # the upload is gone from storage (deleted after intake)
UNSUPPORTED_LANGUAGE = "unsupported_language"  # the model does not know the job's language
UNSUPPORTED_TASK = "unsupported_task"  # translate asked of an English-only model (it only transcribes English)
SOURCE_UNREACHABLE = "source_unreachable"  # a job's source_url answered 4xx, redirected too often, or was refused
SOURCE_TOO_LARGE = "source_too_large"  # a job's source_url is larger than its size cap
INPUT_TOO_LARGE_FOR_WORKER = "input_too_large_for_worker"  # the input needs more disk than a worker has
PERMANENT_ERROR = "permanent_error"  # the worker's catch-all for a failure retrying cannot help

# every code above a job can fail with, and the worker's catch-all for a permanent failure: the
# closed set of the error-code dimension of the job metrics (batchscribe.outcomes)
JOB_FAILURE_CODES: frozenset[str] = frozenset(
    {
        UPLOAD_TOO_LARGE,
        UPLOAD_EMPTY,
        UPLOAD_EXPIRED,
        UPLOAD_CONTENT_TYPE_MISMATCH,
        RETRIES_EXHAUSTED,
        INVALID_MEDIA,
        NO_AUDIO,
        TOO_LONG,
        QUEUE_TIMEOUT,
        INPUT_CHANGED,
        UNSUPPORTED_MODEL,
        INPUT_MISSING,
        UNSUPPORTED_LANGUAGE,
        SOURCE_UNREACHABLE,
        SOURCE_TOO_LARGE,
        INPUT_TOO_LARGE_FOR_WORKER,
        PERMANENT_ERROR,
    }
)

# Notices a succeeded job's result may carry (result.warnings): the job did what was asked, but
# the transcript may not be what the user expects. Stable, like the failure codes.
NO_SPEECH = "no_speech"  # no speech was found: the transcript is empty
LOW_CONFIDENCE = "low_confidence"  # much of it failed Whisper's own checks (loops, unlikely text)
