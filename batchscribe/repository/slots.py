"""Owners' running slots: while an owner's running jobs are capped, the item
`slots#<owner key>` holds the set of its running job ids (`jobs`). A claim takes a slot in
one transaction with the job's own update (condition: fewer than the cap, or this job already
in it); every exit from running frees it. The items sit in the sparse sweep index under
`slots`, so the sweeper drops ids whose job is no longer running (an exit that crashed
between its two writes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from batchscribe.repository.dynamo import Table
from batchscribe.resources import SWEEP_INDEX

SLOTS_SWEEP_STATUS = "slots"  # the running-slot items' partition in the sweep index
logger = Logger(service="batchscribe", child=True)


class OwnerSlots(Table):
    @staticmethod
    def item_id(owner_key: str) -> str:
        return f"slots#{owner_key}"

    def take(self, owner_key: str, job_id: str, cap: int) -> dict[str, Any]:
        """The transaction item that takes one of the owner's `cap` slots for `job_id`."""
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": self.key(self.item_id(owner_key)),
                "UpdateExpression": "ADD #jobs :job SET #ss = :ss, #sa = :zero",
                "ConditionExpression": "attribute_not_exists(#jobs) OR size(#jobs) < :cap OR contains(#jobs, :id)",
                "ExpressionAttributeNames": {"#jobs": "jobs", "#ss": "sweep_status", "#sa": "sweep_at"},
                "ExpressionAttributeValues": {
                    ":job": {"SS": [job_id]},
                    ":id": {"S": job_id},
                    ":cap": {"N": str(cap)},
                    ":ss": {"S": SLOTS_SWEEP_STATUS},
                    ":zero": {"N": "0"},
                },
            }
        }

    def free(self, owner_key: str, job_id: str) -> None:
        """The job left running: its owner's slot is free again (idempotent; nothing to do
        when its owner has no slot item, i.e. no cap was ever applied). Best effort: a slot
        this fails to free, the sweeper frees."""
        try:
            self.write_if(
                "update_item",
                TableName=self.table_name,
                Key=self.key(self.item_id(owner_key)),
                UpdateExpression="DELETE #jobs :job",
                ConditionExpression="contains(#jobs, :id)",
                ExpressionAttributeNames={"#jobs": "jobs"},
                ExpressionAttributeValues={":job": {"SS": [job_id]}, ":id": {"S": job_id}},
            )
        except (ClientError, BotoCoreError):
            logger.warning("running slot not freed; the sweeper will", extra={"job_id": job_id})

    def running(self) -> Iterator[tuple[str, list[str]]]:
        """(owner key, running job ids) of every owner's slot item."""
        pages = self.query(
            IndexName=SWEEP_INDEX,
            KeyConditionExpression="sweep_status = :s",
            ExpressionAttributeValues={":s": {"S": SLOTS_SWEEP_STATUS}},
        )
        for page in pages:
            for item in page.get("Items", []):
                yield item["job_id"]["S"].removeprefix("slots#"), sorted(item.get("jobs", {}).get("SS", []))

    def free_stale(self, still_running: Callable[[str], bool]) -> int:
        """Drop slot ids whose job is no longer running (`still_running(job_id)` says);
        returns how many were freed."""
        freed = 0
        for owner_key, job_ids in self.running():
            for job_id in job_ids:
                if not still_running(job_id):
                    self.free(owner_key, job_id)
                    freed += 1
        return freed
