"""The stack's terminal lines, one per status change of a job ("job 1a2b3c4d: queued → running
(attempt 1)"), read from the jobs table's stream records: the same records the notify function
gets, so the lines show what it saw, every change once, with nothing read from the table."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from batchscribe.models import Job
from batchscribe.repository import job_from_image


class TransitionLog:
    """`transitions` keeps the last changes as (job id, status before or "", status after)."""

    def __init__(self, say: Callable[[str], None], keep: int = 10_000) -> None:
        self.say = say
        self.transitions: deque[tuple[str, str, str]] = deque(maxlen=keep)

    def observe(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            change = record.get("dynamodb", {})
            old, new = change.get("OldImage") or {}, change.get("NewImage") or {}
            if old.get("status") == new.get("status"):
                continue  # progress, heartbeats, callbacks: no change of status
            job = job_from_image(new)
            if job is not None:
                before = job_from_image(old)
                self._record(before.status.value if before else "", job)

    def _record(self, before: str, job: Job) -> None:
        self.transitions.append((job.job_id, before, job.status.value))
        extra = f" (attempt {job.attempt})" if job.status == "running" else ""
        if job.status == "failed" and job.error is not None:
            extra = f" ({job.error.code})"
        self.say(f"job {job.job_id[:8]}: {before + ' → ' if before else ''}{job.status.value}{extra}")
