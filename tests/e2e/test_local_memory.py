"""The local stack's memory stays flat while it runs (issue 11): its loops read the table
and its stream every fraction of a second, and moto keeps a reference to every object a read
copies, every stream record and every stream iterator, unless the stack drops them. A short
version of `make soak` (scripts/soak.py runs it for hours)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import pytest

from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalConfig, LocalStack

pytestmark = pytest.mark.slow


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def moto_tracked() -> int:
    from moto.core.model_instances import model_data

    return sum(len(getattr(m, "instances_tracked", [])) for ms in model_data.values() for m in ms.values())


def moto_stream(table: str) -> tuple[int, int]:
    """(records moto holds in the table's stream, shard iterators it keeps for that stream)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    shard = dynamodb_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].get_table(table).stream_shard
    iterators = dynamodbstreams_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].shard_iterators.values()
    assert shard is not None
    return len(shard.items), sum(1 for i in iterators if i.stream_shard is shard)


def test_memory_stays_flat_with_a_hundred_open_jobs(tmp_path: Path) -> None:
    config = LocalConfig(port=0, max_workers=0, data_dir=tmp_path, quiet=True, save_every_seconds=2)
    with LocalStack(config) as stack:
        c = Client(stack.url, owner="alice")
        for _ in range(100):  # open jobs: every loop of the stack reads them
            c.request("POST", "/jobs", {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 100})
        time.sleep(3)
        gc.collect()
        before, samples = rss_mb(), []
        for _ in range(10):
            time.sleep(2)
            c.list(limit=100)
            samples.append((rss_mb(), moto_tracked()))
        assert stack.resources is not None
        # the stream event source reads 4 times a second, each read an iterator, each write a record
        held_records, held_iterators = moto_stream(stack.resources.table)

    growth = samples[-1][0] - before
    # Before the fix: ~15 MB in these 20 s (0.75 MB/s) and ~7,000 tracked copies of items.
    assert growth < 6, samples
    assert max(tracked for _, tracked in samples) < 3000, samples
    # moto would keep every stream record (both images of each of the 100 creates) and every
    # iterator (~80 in these 20 s); the stack drops what its stream event source has read
    assert held_records < 20 and held_iterators <= 2, (held_records, held_iterators)
