"""The "Job Status Change" event users subscribe to on the default EventBridge bus: what it
says (logic) and how it is published (adapter)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from batchscribe import aws
from batchscribe.models import Job, JobSummary
from batchscribe.resources import DETAIL_TYPE, EVENT_SOURCE


def status_change(old: Job | None, new: Job) -> dict[str, Any] | None:
    """The event detail for a job that just reached a terminal status, else None: the job's
    summary (the same a webhook carries) and the status it came from."""
    if not new.status.terminal or (old is not None and old.status == new.status):
        return None
    summary = JobSummary.of(new).as_json()
    return {**summary, "previous_status": old.status.value if old else None}


class EventPublisher:
    """Puts status-change events on an EventBridge bus, ten per call (the API's limit)."""

    BATCH = 10

    def __init__(self, bus_name: str = "default") -> None:
        self.bus_name = bus_name

    def publish(self, changes: Iterable[tuple[Job, dict[str, Any]]]) -> int:
        entries = [
            {
                "Source": EVENT_SOURCE,
                "DetailType": DETAIL_TYPE,
                "Detail": json.dumps(detail),
                "Resources": [job.job_id],
                "EventBusName": self.bus_name,
            }
            for job, detail in changes
        ]
        for i in range(0, len(entries), self.BATCH):
            resp = aws.client("events").put_events(Entries=entries[i : i + self.BATCH])
            if resp.get("FailedEntryCount"):
                raise RuntimeError(f"{resp['FailedEntryCount']} events were not accepted; the batch is retried")
        return len(entries)
