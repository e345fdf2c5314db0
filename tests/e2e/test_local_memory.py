"""The local stack's memory stays flat while it runs (issue 11): its loops read the table
every fraction of a second, and moto keeps a reference to every object a read copies unless
the stack drops them. A short version of `make soak` (scripts/soak.py runs it for hours)."""

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

    growth = samples[-1][0] - before
    # Before the fix: ~15 MB in these 20 s (0.75 MB/s) and ~7,000 tracked copies of items.
    assert growth < 6, samples
    assert max(tracked for _, tracked in samples) < 3000, samples
