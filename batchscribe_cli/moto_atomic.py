"""Make moto's DynamoDB writes atomic, as DynamoDB's are, and its SQS deletes safe beside sends.

moto evaluates a conditional write's condition and then applies it without a lock, so two
concurrent writes to one item can both pass their conditions: a worker's heartbeat (condition
`status = running`, update `SET status = running, ...`) that interleaves with a commit
(`running -> succeeded`) puts the job back to `running`. DynamoDB never does that: each write is
atomic. The local stack (moto server, one thread per request) and the tests (moto decorator,
worker threads) apply this before they start, so they test the service, not moto's races.

moto's SQS queue deletes a message by rebuilding its message list without the lock its sends
take, so a message sent to the queue during a delete can vanish: SQS never loses a sent
message. Deletes take that lock here. (Two concurrent receives may still both get one message:
SQS is at-least-once too, and the service is built for that.)
"""

from __future__ import annotations

import functools
import threading
from contextlib import AbstractContextManager
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")


def apply() -> None:
    """Serialise DynamoDB item writes, and SQS deletes with sends, in this process's moto
    backends (idempotent)."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.sqs.models import Queue

    delete = Queue.delete_message
    if not getattr(delete, "_atomic", False):

        def delete_locked(self: Any, receipt_handle: str) -> None:
            with self._messages_lock:  # the Condition add_message appends under
                delete(self, receipt_handle)

        functools.update_wrapper(delete_locked, delete)
        delete_locked._atomic = True  # type: ignore[attr-defined]
        Queue.delete_message = delete_locked

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


def item_writes() -> AbstractContextManager[Any]:
    """The lock each DynamoDB item write takes once `apply()` has run: while it is held, no item
    is written and no stream record is appended."""
    return _LOCK
