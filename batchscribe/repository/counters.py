"""Counters in the jobs table: create rates per owner (the API's limit) and claims per pool
(the queue estimate's throughput). Each is one item per fixed window, counted with an
atomic ADD, with a TTL; none is a job (no `owner`, so they stay out of the listing index).

- `rate#<owner hash>#<window>`: creates of one owner in one window, ADDed under a condition
  (fewer than the limit), so of N concurrent creates exactly `limit` pass;
- `claims#<pool key>#<minute>`: claims by the workers of the pool draining a queue.
"""

from __future__ import annotations

import hashlib

from batchscribe.errors import RateLimited
from batchscribe.repository.dynamo import Refused, Table


class Counters(Table):
    def count_create(self, owner: str, limit: int, window_seconds: int) -> int:
        """Count one create against the owner's fixed-window limit, or raise RateLimited
        (with the seconds until the window ends). Returns the count after this one."""
        now = self.clock()
        window = int(now // window_seconds)
        ends = (window + 1) * window_seconds
        key = "rate#" + hashlib.sha256(owner.encode()).hexdigest()[:32] + f"#{window}"
        resp = self.write_if(
            "update_item",
            TableName=self.table_name,
            Key=self.key(key),
            UpdateExpression="ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)",
            ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
            ExpressionAttributeNames={"#n": "creates", "#ttl": "ttl"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":limit": {"N": str(limit)},
                ":ttl": {"N": str(ends + 3600)},
            },
            ReturnValues="UPDATED_NEW",
        )
        if isinstance(resp, Refused):
            retry_after = max(1, int(-(-(ends - now) // 1)))
            raise RateLimited(
                f"over the limit of {limit} job creates per {window_seconds} s for this caller; "
                f"retry after {retry_after} s",
                retry_after=retry_after,
                details={"limit": limit, "window_seconds": window_seconds, "retry_after": retry_after},
            )
        return int(resp["Attributes"]["creates"]["N"])

    @staticmethod
    def _pool_key(queue_url: str) -> str:
        return hashlib.sha256(queue_url.encode()).hexdigest()[:16]

    def _claims_key(self, queue_url: str, minute: int) -> str:
        return f"claims#{self._pool_key(queue_url)}#{minute}"

    def count_claim(self, queue_url: str) -> None:
        """A worker of the pool draining `queue_url` claimed a job: one ADD on this minute's
        counter (what the queue estimate divides by)."""
        minute = int(self.clock() // 60)
        self.db.update_item(
            TableName=self.table_name,
            Key=self.key(self._claims_key(queue_url, minute)),
            UpdateExpression="ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)",
            ExpressionAttributeNames={"#n": "claims", "#ttl": "ttl"},
            ExpressionAttributeValues={":one": {"N": "1"}, ":ttl": {"N": str((minute + 60) * 60)}},
        )

    def claims_per_minute(self, queue_url: str, minutes: int = 5) -> float:
        """The pool's claims per minute over the last `minutes` whole minutes and this one."""
        now = self.clock()
        current = int(now // 60)
        keys = [self.key(self._claims_key(queue_url, m)) for m in range(current - minutes, current + 1)]
        resp = self.db.batch_get_item(RequestItems={self.table_name: {"Keys": keys}})
        total = sum(int(item["claims"]["N"]) for item in resp.get("Responses", {}).get(self.table_name, []))
        span = minutes + (now - current * 60) / 60  # the whole minutes and the part of this one
        return total / span if span > 0 else 0.0
