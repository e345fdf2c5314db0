"""The S3 key layout. Every key the service reads or writes is made here, from ids the
server chose; nothing a client sends becomes part of a key."""

from __future__ import annotations

import hashlib
import re
import uuid

UPLOADS_PREFIX = "uploads/"
OUTPUTS_PREFIX = "outputs/"

_UPLOAD_KEY = re.compile(r"^uploads/(?P<owner_key>[0-9a-f]{32})/(?P<job_id>[0-9a-f]{32})/input$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(value: str) -> bool:
    return bool(_JOB_ID.match(value))


def owner_key(owner: str) -> str:
    """A fixed-length, path-safe stand-in for the owner's IAM ARN (no names leak into keys)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


def upload_key(owner_key_: str, job_id: str) -> str:
    return f"{UPLOADS_PREFIX}{owner_key_}/{job_id}/input"


def parse_upload_key(key: str) -> tuple[str, str] | None:
    """(owner_key, job_id) of an upload key, or None for anything the service did not make."""
    match = _UPLOAD_KEY.match(key)
    return (match["owner_key"], match["job_id"]) if match else None


def output_prefix(owner_key_: str, job_id: str) -> str:
    return f"{OUTPUTS_PREFIX}{owner_key_}/{job_id}/"


def output_key(owner_key_: str, job_id: str, fmt: str) -> str:
    return f"{output_prefix(owner_key_, job_id)}transcript.{fmt}"


def log_key(owner_key_: str, job_id: str) -> str:
    return f"{output_prefix(owner_key_, job_id)}log.txt"
