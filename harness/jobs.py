"""A job taken to `succeeded` straight through the repository, as the intake and a worker leave
it, without running either: for the tests and benchmarks that need a finished job at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchscribe import keys
from batchscribe.models import ALL_FORMATS, Job, ResultSummary
from batchscribe.repository import JobRepository


def put_outputs(
    s3: Any, bucket: str, record: Job, transcripts: Mapping[str, bytes], log: bytes | None = None
) -> tuple[dict[str, str], str | None]:
    """Write each format's transcript (and the job's log, if given) where a worker writes them;
    returns (format -> key, the log's key or None)."""
    outputs = {fmt: keys.output_key(record.owner_key, record.job_id, fmt) for fmt in transcripts}
    for fmt, key in outputs.items():
        s3.put_object(Bucket=bucket, Key=key, Body=transcripts[fmt])
    if log is None:
        return outputs, None
    log_key = keys.log_key(record.owner_key, record.job_id)
    s3.put_object(Bucket=bucket, Key=log_key, Body=log)
    return outputs, log_key


def succeed_job(
    repo: JobRepository,
    job_id: str,
    outputs: Mapping[str, str] | None = None,
    log_key: str | None = None,
    **summary: Any,
) -> Job:
    """A pending job through queued and running (attempt 1) to succeeded, with these output keys
    (default: every format's key, no object written) and log; `summary` overrides the result's
    fields (tiny.en on faster-whisper, 10 s of English by default)."""
    if outputs is None:
        record = repo.get(job_id)
        outputs = {fmt: keys.output_key(record.owner_key, job_id, fmt) for fmt in ALL_FORMATS}
        log_key = log_key or keys.log_key(record.owner_key, job_id)
    repo.enqueue(job_id, 1000)
    claimed = repo.claim(job_id, "harness-worker", 60)
    return repo.succeed(job_id, claimed.attempt, result_summary(outputs=dict(outputs), **summary), log_key)


def result_summary(**fields: Any) -> ResultSummary:
    """A finished job's result: tiny.en on faster-whisper, 10 s of English, no outputs, unless
    `fields` say otherwise."""
    defaults: dict[str, Any] = {
        "language": "en",
        "duration_seconds": 10.0,
        "outputs": {},
        "engine": "faster-whisper",
        "model": "tiny.en",
        "compute_seconds": 0.5,
        "real_time_factor": 0.05,
        "segments": 1,
    }
    return ResultSummary(**{**defaults, **fields})
