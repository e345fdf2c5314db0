"""The local stack's DynamoDB stream event source behaves as Lambda's does for the notify
function: it delivers the records written after it opened, in order, in the event shape Lambda
builds (eventName, Keys, NewImage, OldImage, SequenceNumber, eventSourceARN); a failing batch
is bisected and retried, then left, and the stream goes on. And moto, which keeps every stream
record and every shard iterator, holds none of what was read (the stack runs for hours)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest

from batchscribe_cli.local.event_sources import StreamEventSource
from batchscribe_cli.local.motoserver import forget_read_stream_records
from tests.conftest import Stack


@pytest.fixture(autouse=True)
def streams_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore sends a call naming a stream ARN to an account-based endpoint
    (ACCOUNT.streams-ddb.REGION.amazonaws.com) that moto's decorator mode does not know; the
    local stack names its endpoint (moto's server), so it is untouched by this."""
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")


def put(table: str, key: str, status: str) -> None:
    boto3.client("dynamodb").put_item(TableName=table, Item={"job_id": {"S": key}, "status": {"S": status}})


def source(table: str, handler: Any, lines: list[str], **kw: Any) -> StreamEventSource:
    s = StreamEventSource(table, handler, stopping=threading.Event(), say=lines.append, **kw)
    s.open()
    return s


def test_records_arrive_in_order_in_lambdas_event_shape_from_the_latest_position(aws_stack: Stack) -> None:
    put(aws_stack.table, "before", "pending")  # written before the source opened: not delivered
    events: list[dict[str, Any]] = []
    s = source(aws_stack.table, lambda event, _ctx: events.append(event), [])

    put(aws_stack.table, "a", "pending")
    put(aws_stack.table, "a", "queued")
    boto3.client("dynamodb").delete_item(TableName=aws_stack.table, Key={"job_id": {"S": "a"}})
    assert s.poll() == 3

    [event] = events
    records = event["Records"]
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert {r["eventSourceARN"] for r in records} == {s.stream_arn} and "/stream/" in s.stream_arn
    insert, modify, remove = (r["dynamodb"] for r in records)
    assert insert["Keys"] == {"job_id": {"S": "a"}} and "OldImage" not in insert
    assert modify["OldImage"]["status"] == {"S": "pending"} and modify["NewImage"]["status"] == {"S": "queued"}
    assert remove["OldImage"]["status"] == {"S": "queued"} and "NewImage" not in remove
    sequence = [int(r["SequenceNumber"]) for r in (insert, modify, remove)]
    assert sequence == sorted(sequence) and len(set(sequence)) == 3
    assert isinstance(insert["ApproximateCreationDateTime"], int)  # epoch seconds, as Lambda gives them
    assert s.poll() == 0 and len(events) == 1  # nothing read twice


def test_what_was_read_is_dropped_from_moto_and_numbering_goes_on(aws_stack: Stack) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    shard = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(aws_stack.table).stream_shard
    iterators = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].shard_iterators
    assert shard is not None
    seen: list[int] = []
    s = source(
        aws_stack.table,
        lambda event, _ctx: seen.extend(int(r["dynamodb"]["SequenceNumber"]) for r in event["Records"]),
        [],
        after_read=forget_read_stream_records,
    )
    for round_ in range(3):
        for i in range(5):
            put(aws_stack.table, f"job-{i}", f"status-{round_}")
        assert s.poll() == 5
        s.poll()  # an empty read makes an iterator too
        # Then moto keeps none of the records read, and one iterator of this shard: the next
        assert shard.items == []
        assert [i for i in iterators.values() if i.stream_shard is shard] == [iterators[s.iterator]]
    assert seen == list(range(seen[0], seen[0] + 15))  # no number reused after a trim


def test_a_failing_record_is_isolated_retried_and_left_and_the_stream_goes_on(aws_stack: Stack) -> None:
    delivered: list[str] = []
    tries = {"poison": 0}

    def handler(event: dict[str, Any], _ctx: Any) -> None:
        keys = [r["dynamodb"]["Keys"]["job_id"]["S"] for r in event["Records"]]
        if "poison" in keys:
            tries["poison"] += len(keys) == 1
            raise RuntimeError("cannot handle it")
        delivered.extend(keys)

    lines: list[str] = []
    s = source(aws_stack.table, handler, lines, retry_attempts=1)
    for key in ("a", "b", "poison", "c"):
        put(aws_stack.table, key, "x")
    assert s.poll() == 4
    put(aws_stack.table, "d", "x")
    assert s.poll() == 1

    assert delivered == ["a", "b", "c", "d"]  # bisected around the poison record, in order
    assert tries["poison"] == 2  # once, then retry_attempts more times
    assert any("the handler raised RuntimeError; bisected and retried" in line for line in lines)
    assert any("failed (RuntimeError) 2 times; left" in line for line in lines)


def test_a_failed_read_is_read_again(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    from batchscribe import aws

    events: list[dict[str, Any]] = []
    lines: list[str] = []
    s = source(aws_stack.table, lambda event, _ctx: events.append(event), lines)
    streams = aws.client("dynamodbstreams")
    real = streams.get_records
    trouble = [1]

    def flaky(**kw: Any) -> Any:
        if trouble[0]:
            trouble[0] -= 1
            raise ClientError({"Error": {"Code": "InternalServerError"}}, "GetRecords")
        return real(**kw)

    monkeypatch.setattr(streams, "get_records", flaky)
    put(aws_stack.table, "a", "pending")
    assert s.poll() == 0 and s.poll() == 1
    assert [r["dynamodb"]["Keys"]["job_id"]["S"] for r in events[0]["Records"]] == ["a"]
    assert any("could not read (ClientError); polling again" in line for line in lines)
