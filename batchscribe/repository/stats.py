"""The operator's counters in the jobs table: one item per hour, `stats#<hour>` (hours since the
epoch), whose attributes are counts ADDed by the notify function as the stream shows each job
end, and read back an hour per item by `batchscribe stats` (GET /admin/stats). None is a job (no
`owner`): they stay out of both indexes, and the stream's reader skips them.

- `ended|<status>|<pool>|<model>|<error code>`: jobs that ended in that hour;
- `attempts|<pool>|<model>|<n>`: jobs that succeeded in that hour on their n-th attempt;
- `expiring`: jobs whose record's TTL falls in that hour (counted when the job is created).

Every part of a name is drawn from a closed set (batchscribe.outcomes), so an item holds a few
hundred attributes at most. Reading a window of H hours costs H item reads (BatchGetItem), however
many jobs ran; writing costs one UpdateItem per job end and one per job created.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from batchscribe.outcomes import JobEnd
from batchscribe.repository.dynamo import Table
from batchscribe.resources import STATS_ITEM_PREFIX, STATS_KEEP_SECONDS, TTL_ATTRIBUTE

ENDED = "ended"
ATTEMPTS = "attempts"
EXPIRING = "expiring"
SEP = "|"


def hour_of(ts: float) -> int:
    return int(ts // 3600)


def stats_key(hour: int) -> str:
    return f"{STATS_ITEM_PREFIX}{hour}"


class StatsCounters(Table):
    def _add(self, hour: int, counts: dict[str, int]) -> None:
        """ADD each count to the hour's item (made on first use, with its TTL)."""
        names = {f"#c{i}": name for i, name in enumerate(counts)}
        values: dict[str, Any] = {f":c{i}": {"N": str(n)} for i, n in enumerate(counts.values())}
        values[":ttl"] = {"N": str((hour + 1) * 3600 + STATS_KEEP_SECONDS)}
        adds = ", ".join(f"#c{i} :c{i}" for i in range(len(counts)))
        self.db.update_item(
            TableName=self.table_name,
            Key=self.key(stats_key(hour)),
            UpdateExpression=f"ADD {adds} SET #ttl = if_not_exists(#ttl, :ttl)",
            ExpressionAttributeNames={**names, "#ttl": TTL_ATTRIBUTE},
            ExpressionAttributeValues=values,
        )

    def count_end(self, end: JobEnd, at: float) -> None:
        """One job ended at `at`: its status x pool x model x error code, and, for a success,
        the attempts it took."""
        counts = {SEP.join((ENDED, end.status, end.pool, end.model, end.error_code)): 1}
        if end.status == "succeeded":
            counts[SEP.join((ATTEMPTS, end.pool, end.model, str(end.attempts)))] = 1
        self._add(hour_of(at), counts)

    def count_created(self, ttl: int) -> None:
        """A job was created: its record expires in the hour of its `ttl`."""
        self._add(hour_of(ttl), {EXPIRING: 1})

    def hours(self, first: int, last: int) -> Iterator[tuple[int, dict[str, int]]]:
        """The counts of each hour from `first` to `last` (both included) that has any."""
        for item in self.batch_get([stats_key(h) for h in range(first, last + 1)]):
            hour = int(item["job_id"]["S"].removeprefix(STATS_ITEM_PREFIX))
            yield hour, {k: int(v["N"]) for k, v in item.items() if SEP in k or k == EXPIRING}
