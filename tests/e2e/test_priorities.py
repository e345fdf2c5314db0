"""Priorities and per-owner fairness on the local stack, over real HTTP, with one worker
process (holding up to two jobs, as a GPU worker holds several) and a running cap of one job
per owner. Jobs are one short spoken sentence each, so the whole module stays within a few
minutes on two cores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from batchscribe.errors import JOB_NOT_CANCELLABLE
from batchscribe.resources import PASS_OVER_LIMIT
from batchscribe_cli.client import OWNER_HEADER, ApiError, Client
from batchscribe_cli.local import LocalStack
from harness.audio import SENTENCES, speak
from tests.e2e.waits import running_stack, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(
        tmp_path_factory,
        idle_exit_seconds=8,
        worker_held_jobs=2,
        worker_batch_size=2,
        max_running_per_owner=1,
        owner_cap_delay_seconds=1,
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(SENTENCES[0], tmp_path_factory.mktemp("audio") / "one.wav")


def client(stack: LocalStack, owner: str) -> Client:
    return Client(stack.url, owner=owner)


def jobs(stack: LocalStack, owner: str, ids: list[str]) -> list[dict[str, Any]]:
    c = client(stack, owner)
    return [c.request("GET", f"/jobs/{i}") for i in ids]


def cancel_if_open(c: Client, job_id: str) -> None:
    """Cancel a job still open; one that finishes between the read and the cancel is left be."""
    if c.request("GET", f"/jobs/{job_id}")["status"] in ("pending", "queued", "running"):
        try:
            c.request("POST", f"/jobs/{job_id}/cancel")
        except ApiError as e:
            if e.code != JOB_NOT_CANCELLABLE:
                raise


def finished(stack: LocalStack, owner: str, ids: list[str]) -> bool:
    return all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs(stack, owner, ids))


def test_a_high_job_starts_next_ahead_of_queued_low_jobs(stack: LocalStack, clip: Path) -> None:
    low = client(stack, "lowowner")
    lows = [low.submit(clip, {"language": "en"}, priority="low")["job_id"] for _ in range(6)]
    wait_until(lambda: any(j["status"] == "running" for j in jobs(stack, "lowowner", lows)), 90)

    high = client(stack, "highowner").submit(clip, {"language": "en"}, priority="high")["job_id"]
    wait_until(lambda: finished(stack, "highowner", [high]) and finished(stack, "lowowner", lows), 180)

    [h] = jobs(stack, "highowner", [high])
    assert h["status"] == "succeeded" and h["priority"] == "high"
    done = jobs(stack, "lowowner", lows)
    assert all(j["status"] == "succeeded" and j["priority"] == "low" for j in done)
    started_after = sorted([j for j in done if j["started_at"] > h["queued_at"]] + [h], key=lambda j: j["started_at"])
    # the high job is the next claim, except that a low message the worker had already received
    # when the high job was queued is still claimed (a few round trips later): at most one low
    # job starts before it, never the queue of them
    order = [j["job_id"] for j in started_after]
    assert order.index(high) <= 1, [(j["priority"], j["started_at"]) for j in started_after]
    assert len(started_after) >= 4  # low jobs were still waiting when the high one came


def test_a_low_job_advances_under_a_continuous_stream_of_high_jobs(stack: LocalStack, clip: Path) -> None:
    stop = threading.Event()
    highs: list[tuple[str, str]] = []

    def stream() -> None:  # keep high jobs queued from several owners (each capped at one running)
        i = 0
        while not stop.is_set():
            owner = f"stream{i % 4}"
            queued = [j for o, j in highs[-8:] if o == owner]
            if len([j for j in jobs(stack, owner, queued) if j["status"] in ("pending", "queued")]) < 2:
                highs.append((owner, client(stack, owner).submit(clip, {"language": "en"}, priority="high")["job_id"]))
            i += 1
            time.sleep(0.2)

    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    try:
        wait_until(lambda: len(highs) >= 6, 30)
        low = client(stack, "patient").submit(clip, {"language": "en"}, priority="low")["job_id"]
        started = time.monotonic()
        wait_until(lambda: finished(stack, "patient", [low]), 150, every=0.5)
        waited = time.monotonic() - started
        # the stream never ran dry: high jobs were still waiting when the low one finished
        waiting = [j for o, i in highs for j in jobs(stack, o, [i]) if j["status"] in ("pending", "queued")]
    finally:
        stop.set()
        feeder.join(10)
    [done] = jobs(stack, "patient", [low])
    assert done["status"] == "succeeded"
    assert waiting, "the high stream ran dry: the test proved nothing"
    # the bound: a low job at the head of its queue is passed over at most PASS_OVER_LIMIT["low"]
    # receives in a row; one receive claims up to a worker's free slots (K), and a claim may have
    # been in flight on each slot when it was queued
    held = stack.config.worker_held_jobs
    ahead = [
        j
        for o, i in highs
        for j in jobs(stack, o, [i])
        if j["started_at"] and done["queued_at"] < j["started_at"] < done["started_at"]
    ]
    assert 0 < len(ahead) <= PASS_OVER_LIMIT["low"] * held + held, len(ahead)
    assert waited < 150
    for owner, job_id in highs:  # leave the stack idle for the next test
        cancel_if_open(client(stack, owner), job_id)


def test_an_owner_at_its_cap_does_not_hold_back_another_owners_job(stack: LocalStack, clip: Path) -> None:
    flood = client(stack, "flood")
    floods = [flood.submit(clip, {"language": "en"})["job_id"] for _ in range(16)]
    wait_until(lambda: any(j["status"] == "succeeded" for j in jobs(stack, "flood", floods)), 120)

    single = client(stack, "single").submit(clip, {"language": "en"})["job_id"]
    wait_until(lambda: finished(stack, "single", [single]), 120)

    [s] = jobs(stack, "single", [single])
    assert s["status"] == "succeeded"
    # it went ahead of the flood's queued jobs: the worker walks past the flood's over-cap
    # messages queued before it (one receive per free slot between batches), so a few flood jobs
    # start meanwhile (3 on an idle 2-core machine), never the flood's whole backlog. Counted in
    # order, not seconds, so a slow machine does not change the answer.
    flood_jobs = jobs(stack, "flood", floods)
    meanwhile = [j for j in flood_jobs if j["started_at"] and s["queued_at"] < j["started_at"] < s["started_at"]]
    assert len(meanwhile) <= 8, [j["started_at"] for j in meanwhile]
    states = [j["status"] for j in flood_jobs]
    assert "failed" not in states and states.count("queued") >= 5  # over the cap they wait, queued
    # a queued job shows where it stands: its class, a position, and an estimate from throughput
    last = flood.request("GET", f"/jobs/{floods[-1]}")
    if last["status"] == "queued":
        assert last["queue"]["priority"] == "normal" and last["queue"]["position"] >= 1
        assert last["queue"]["claims_per_minute"] > 0 and last["queue"]["estimated_start_at"]
    for job_id in floods:
        cancel_if_open(flood, job_id)


# ---- the create rate limit, over HTTP ---------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(
        tmp_path_factory, name="limited", max_workers=0, create_rate_limit=10, create_rate_window_seconds=3600
    )


def test_50_parallel_creates_against_a_limit_of_10(limited: LocalStack) -> None:
    body: dict[str, Any] = {"filename": "a.wav", "content_type": "audio/wav", "size_bytes": 1000}

    def post(_: int) -> requests.Response:
        return requests.post(f"{limited.url}/jobs", json=body, headers={OWNER_HEADER: "burst"}, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(post, range(50)))

    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * 10 + [429] * 40
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600
