"""The "Job Status Change" event users subscribe to on the default EventBridge bus."""

from __future__ import annotations

from typing import Any

from batchscribe.models import Job

EVENT_SOURCE = "batchscribe"
DETAIL_TYPE = "Job Status Change"


def status_change(old: Job | None, new: Job) -> dict[str, Any] | None:
    """The event detail for a job that just reached a terminal status, else None."""
    if not new.status.terminal or (old is not None and old.status == new.status):
        return None
    detail: dict[str, Any] = {
        "job_id": new.job_id,
        "owner": new.owner,
        "status": new.status.value,
        "previous_status": old.status.value if old else None,
        "attempt": new.attempt,
        "created_at": new.created_at,
        "finished_at": new.finished_at,
        "filename": new.input.filename,
    }
    if new.error:
        detail["error"] = new.error.model_dump()
    if new.result:
        detail["result"] = {
            "language": new.result.language,
            "duration_seconds": new.result.duration_seconds,
            "outputs": new.result.outputs,
            "real_time_factor": new.result.real_time_factor,
        }
    return detail
