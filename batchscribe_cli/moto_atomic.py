"""Make moto's DynamoDB writes atomic, as DynamoDB's are.

moto evaluates a conditional write's condition and then applies it without a lock, so two
concurrent writes to one item can both pass their conditions: a worker's heartbeat (condition
`status = running`, update `SET status = running, ...`) that interleaves with a commit
(`running -> succeeded`) puts the job back to `running`. DynamoDB never does that: each write is
atomic. The local stack (moto server, one thread per request) and the tests (moto decorator,
worker threads) apply this before they start, so they test the service, not moto's races.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")


def apply() -> None:
    """Serialise DynamoDB item writes in this process's moto backends (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        method = getattr(DynamoDBBackend, name, None)
        if method is None or getattr(method, "_atomic", False):
            continue

        def locked(self: Any, *args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with _LOCK:
                return __method(self, *args, **kwargs)

        functools.update_wrapper(locked, method)
        locked._atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)
