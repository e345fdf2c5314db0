"""How the worker classifies failures: permanent ones fail the job at once (no retry);
everything else is transient and comes back through SQS."""

from __future__ import annotations

from batchscribe import errors as codes


class PermanentJobError(Exception):
    """The input itself is the problem: retrying cannot help."""

    code = codes.PERMANENT_ERROR

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class InvalidMedia(PermanentJobError):
    code = codes.INVALID_MEDIA


class NoAudio(PermanentJobError):
    code = codes.NO_AUDIO


class TooLong(PermanentJobError):
    code = codes.TOO_LONG


class UnsupportedModel(PermanentJobError):
    code = codes.UNSUPPORTED_MODEL


class UnsupportedLanguage(PermanentJobError):
    code = codes.UNSUPPORTED_LANGUAGE


class InputMissing(PermanentJobError):
    code = codes.INPUT_MISSING


class InputChanged(PermanentJobError):
    code = codes.INPUT_CHANGED


class EngineUnavailable(Exception):
    """This worker could not load an engine (the message says which, and why): a job that needs
    it is left queued, unclaimed, for a worker that can."""


class JobCancelled(Exception):
    """The commit found the job cancelled: the cancel won the race."""


class LeaseLost(Exception):
    """The commit found a newer attempt (another worker took the job over)."""
