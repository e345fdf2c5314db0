"""Idempotency records: `idem#<hash of owner and key>` points at the job a keyed create
made, with the request's fingerprint and a TTL. Written in one transaction with the job, so a
repeated request finds either both or neither; no `owner` attribute, so they stay out of the
listing index."""

from __future__ import annotations

import hashlib
from typing import Any

from batchscribe.errors import IdempotencyConflict
from batchscribe.repository.dynamo import Table, deserialize, serialize

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


class IdempotencyRecords(Table):
    @staticmethod
    def item_id(owner: str, idempotency_key: str) -> str:
        return "idem#" + hashlib.sha256(f"{owner}\n{idempotency_key}".encode()).hexdigest()

    def put(self, owner: str, idempotency_key: str, job_id: str, fingerprint: str) -> dict[str, Any]:
        """The transaction item that records the key (only if it is new)."""
        item = {
            "job_id": self.item_id(owner, idempotency_key),
            "idem_owner": owner,
            "target_job_id": job_id,
            "fingerprint": fingerprint,
            "ttl": int(self.clock()) + IDEMPOTENCY_TTL_SECONDS,
        }
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": serialize(item),
                "ConditionExpression": "attribute_not_exists(job_id)",
            }
        }

    def earlier_job(self, owner: str, idempotency_key: str, fingerprint: str) -> str | None:
        """The job id the key already made, or None when there is no record (the create
        failed for another reason); IdempotencyConflict when the key was used for a
        different request."""
        item = self.get_item(self.item_id(owner, idempotency_key))
        if item is None:
            return None
        existing = deserialize(item)
        if existing.get("fingerprint") != fingerprint:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different request; use a new key")
        return str(existing["target_job_id"])
