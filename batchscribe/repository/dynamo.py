"""What every repository shares: the table's client, item (de)serialisation, one update
expression builder, and the one mapping of a failed condition.

DynamoDB reports a failed condition in two ways: `ConditionalCheckFailedException` for a
single write, `TransactionCanceledException` with per-item `CancellationReasons` for a
transaction. `write_if` and `transact_if` turn both into a return value (`Refused` / which item failed)
and let every other error raise; each repository maps that value to its domain error in one
place, never by matching message text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from batchscribe import aws

CONDITION_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELLED = "TransactionCanceledException"
CONDITION_CHECK_FAILED = "ConditionalCheckFailed"  # a transaction item's cancellation reason

_ser = TypeSerializer()
_de = TypeDeserializer()


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    """Plain values -> DynamoDB attribute values (floats as Decimal; None attributes left out)."""
    # DynamoDB numbers must be Decimal; a JSON round trip converts every float at once.
    plain = json.loads(json.dumps(item), parse_float=Decimal)
    return {k: _ser.serialize(v) for k, v in plain.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values -> plain values (whole numbers as int)."""
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class Update:
    """One UpdateItem's expression, built from named parts. Field paths may be nested
    (`input.size`); a value of None removes the field."""

    sets: dict[str, Any] = field(default_factory=dict)
    removes: tuple[str, ...] = ()
    condition: str = ""
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # plain values, serialised at the end
    raw: tuple[str, ...] = ()  # extra SET clauses written by the caller (`#att = #att + :one`)

    def request(self, table: str, key: dict[str, Any]) -> dict[str, Any]:
        names, values = dict(self.names), dict(self.values)
        parts = list(self.raw)
        removes = [*self.removes, *(f for f, v in self.sets.items() if v is None)]
        for i, (path, value) in enumerate((f, v) for f, v in self.sets.items() if v is not None):
            parts.append(f"{_path(path, f'#s{i}', names)} = :s{i}")
            values[f":s{i}"] = value
        expression = "SET " + ", ".join(parts) if parts else ""
        if removes:
            expression += " REMOVE " + ", ".join(_path(p, f"#r{i}", names) for i, p in enumerate(removes))
        request: dict[str, Any] = {"TableName": table, "Key": key, "UpdateExpression": expression.strip()}
        if self.condition:
            request["ConditionExpression"] = self.condition
        if names:
            request["ExpressionAttributeNames"] = names
        if values:
            request["ExpressionAttributeValues"] = serialize(values)
        return request


def _path(path: str, alias: str, names: dict[str, str]) -> str:
    """`input.size` as `#a_0.#a_1`, its segments added to `names`."""
    out = []
    for j, segment in enumerate(path.split(".")):
        names[f"{alias}_{j}"] = segment
        out.append(f"{alias}_{j}")
    return ".".join(out)


@dataclass(frozen=True)
class Refused:
    """A conditional write whose condition failed; `old` is the item as it was (typed
    attribute values) when the request asked for it, else None."""

    old: dict[str, Any] | None = None


class Table:
    """One DynamoDB table and a clock: what each repository is made of."""

    def __init__(self, table_name: str, clock: Callable[[], float] = time.time) -> None:
        self.table_name = table_name
        self.clock = clock

    @property
    def db(self) -> Any:
        return aws.client("dynamodb")

    def key(self, item_id: str) -> dict[str, Any]:
        return {"job_id": {"S": item_id}}

    def get_item(self, item_id: str, **kwargs: Any) -> dict[str, Any] | None:
        resp = self.db.get_item(TableName=self.table_name, Key=self.key(item_id), ConsistentRead=True, **kwargs)
        item = resp.get("Item")
        return dict(item) if item is not None else None

    def write_if(self, operation: str, **request: Any) -> dict[str, Any] | Refused:
        """A conditional PutItem/UpdateItem (`operation`: put_item, update_item): its response,
        or Refused (with the item as it was, where the request asked for ALL_OLD) when its
        condition failed. Every other error raises."""
        try:
            return dict(getattr(self.db, operation)(**request))
        except ClientError as exc:
            if error_code(exc) == CONDITION_FAILED:
                return Refused(old=exc.response.get("Item"))
            raise

    def update_if(self, item_id: str, update: Update, **options: Any) -> dict[str, Any] | Refused:
        """`write_if` for one Update of one item."""
        return self.write_if("update_item", **update.request(self.table_name, self.key(item_id)), **options)

    def transact_if(self, items: list[dict[str, Any]]) -> list[bool] | None:
        """TransactWriteItems: None when it was written; when a condition failed, for each
        item whether its condition was the one that failed. Every other error raises (a
        cancellation for a conflict or throttling included)."""
        try:
            self.db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) != TRANSACTION_CANCELLED:
                raise
            reasons = [r.get("Code") == CONDITION_CHECK_FAILED for r in exc.response.get("CancellationReasons", [])]
            if not any(reasons):
                raise
            return reasons
        return None

    def batch_get(self, item_ids: list[str], **options: Any) -> Iterator[dict[str, Any]]:
        """The items of these ids that exist (BatchGetItem, 100 keys a call, what DynamoDB left
        unprocessed asked again), in no particular order."""
        for i in range(0, len(item_ids), 100):
            keys = [self.key(k) for k in item_ids[i : i + 100]]
            request: dict[str, Any] = {self.table_name: {"Keys": keys, **options}}
            while request:
                resp = self.db.batch_get_item(RequestItems=request)
                yield from resp.get("Responses", {}).get(self.table_name, [])
                request = resp.get("UnprocessedKeys") or {}

    def query(self, max_pages: int | None = None, **request: Any) -> Iterator[dict[str, Any]]:
        """The pages of a Query (boto3's paginator), at most `max_pages`."""
        pages = self.db.get_paginator("query").paginate(TableName=self.table_name, **request)
        for n, page in enumerate(pages, start=1):
            yield page
            if max_pages is not None and n >= max_pages:
                return
