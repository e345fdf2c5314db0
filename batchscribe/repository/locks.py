"""Run leases in the jobs table: one item `<name>#lock` per singleton task (the scaler's is
`scaler#lock`), so that however many invocations start at once, one runs at a time and runs
start at least a window apart. Not a job (no `owner`: out of the listing index, skipped by the
stream's readers; no `sweep_status`: out of the sweep index).

Attributes: `holder` (the run holding it) and `expires_at` (when a holder that died stops
holding it), `last_start` (when the last run started: the window counts from there), and
`pending` (wakes that came while it was held, served by the holder's next round).

Every step is one conditional UpdateItem, so the order DynamoDB applies them in decides:
- `take`: only while nobody holds it (or the holder's lease expired);
- `note_wake`: only while that same holder still holds it, else the caller takes it itself;
- `start`: by the holder, when its round begins: `last_start` now, `pending` cleared (the wakes
  before it are served by this round);
- `release`: by the holder, only if no wake came during its round; if one did, the holder
  runs another round instead. `release(force=True)` gives it up regardless (errors, time out).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchscribe.repository.dynamo import Refused, Table
from batchscribe.resources import lease_item_id

_NAMES = {"#h": "holder", "#e": "expires_at", "#s": "last_start", "#p": "pending"}


@dataclass(frozen=True)
class LeaseState:
    """The lease item as one write found it."""

    holder: str | None = None
    expires_at: float = 0.0
    last_start: float | None = None
    pending: int = 0

    @classmethod
    def of(cls, item: dict[str, Any] | None) -> LeaseState:
        item = item or {}

        def number(name: str) -> float | None:
            return float(item[name]["N"]) if name in item else None

        return cls(
            holder=item["holder"]["S"] if "holder" in item else None,
            expires_at=number("expires_at") or 0.0,
            last_start=number("last_start"),
            pending=int(number("pending") or 0),
        )


def _n(value: float) -> dict[str, str]:
    return {"N": repr(float(value))}  # exact: a window is measured between two stored starts


class RunLease(Table):
    def __init__(
        self, table_name: str, name: str, lease_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(table_name, clock)
        self.item_id = lease_item_id(name)
        self.lease_seconds = lease_seconds

    def _update(self, expression: str, condition: str, values: dict[str, Any], **options: Any) -> Any:
        names = {k: v for k, v in _NAMES.items() if k in expression or k in condition}
        return self.write_if(
            "update_item",
            TableName=self.table_name,
            Key=self.key(self.item_id),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
            **options,
        )

    def take(self, holder: str) -> tuple[bool, LeaseState]:
        """(True, the lease as now held by `holder`) or (False, the lease as another holds it)."""
        now = self.clock()
        resp = self._update(
            "SET #h = :me, #e = :until",
            "attribute_not_exists(#h) OR #e < :now",
            {":me": {"S": holder}, ":until": _n(now + self.lease_seconds), ":now": _n(now)},
            ReturnValues="ALL_NEW",
        )
        if isinstance(resp, Refused):
            return False, LeaseState.of(resp.old)
        return True, LeaseState.of(resp["Attributes"])

    def note_wake(self, holder: str) -> bool:
        """Count a wake for `holder`'s next round; False when it no longer holds the lease."""
        resp = self._update(
            "ADD #p :one",
            "#h = :holder AND #e >= :now",
            {":one": {"N": "1"}, ":holder": {"S": holder}, ":now": _n(self.clock())},
        )
        return not isinstance(resp, Refused)

    def start(self, holder: str) -> tuple[float, int] | None:
        """`holder`'s round begins now: (the start it recorded, the wakes it serves), or None
        when `holder` lost the lease."""
        now = self.clock()
        resp = self._update(
            "SET #s = :now, #e = :until REMOVE #p",
            "#h = :me",
            {":me": {"S": holder}, ":now": _n(now), ":until": _n(now + self.lease_seconds)},
            ReturnValues="ALL_OLD",
        )
        if isinstance(resp, Refused):
            return None
        return now, LeaseState.of(resp.get("Attributes")).pending

    def state(self) -> LeaseState:
        """The lease as it is now (a consistent read)."""
        return LeaseState.of(self.get_item(self.item_id))

    def release(self, holder: str, force: bool = False) -> bool:
        """Give the lease up; unless `force`, only if no wake came since `start` (False: one did,
        or `holder` no longer held it)."""
        condition = "#h = :me" if force else "#h = :me AND attribute_not_exists(#p)"
        resp = self._update("REMOVE #h", condition, {":me": {"S": holder}})
        return not isinstance(resp, Refused)
