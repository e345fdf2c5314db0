"""The cross-job batch scheduler, driven with plain windows and a fake runner (no model)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gpu_container.worker.batched import run_isolating
from gpu_container.worker.errors import InvalidMedia
from gpu_container.worker.scheduler import NOT_READY, JobFailed, JobFinished, NotReady, Scheduler, Work
from gpu_container.worker.windows import prefetch
from tests.fakes import Win


@dataclass
class Stream:
    """A job's window stream that counts what was pulled and knows whether it was closed."""

    job: str
    n: int
    fail_after: int | None = None
    pulled: int = 0
    closed: bool = False
    not_ready_first: int = 0
    _it: Iterator[Win | NotReady] = field(init=False)

    def __post_init__(self) -> None:
        self._it = self._gen()

    def _gen(self) -> Iterator[Win | NotReady]:
        try:
            for _ in range(self.not_ready_first):
                yield NOT_READY
            for i in range(self.n):
                if self.fail_after is not None and i == self.fail_after:
                    raise InvalidMedia("the audio stream could not be decoded")
                self.pulled += 1
                yield Win(self.job, i)
        finally:
            self.closed = True

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Win | NotReady:
        return next(self._it)

    def close(self) -> None:
        self._it.close()  # type: ignore[attr-defined]


def result_of(work: Work[Win]) -> tuple[str, int]:
    return (work.window.job, work.window.index)


def drive(s: Scheduler[Win, Any], size: int, max_batches: int = 1000) -> tuple[list[list[Work[Win]]], list[Any]]:
    """Run batches with a fake runner until no job is held; batches and events in order."""
    batches, events = [], []
    for _ in range(max_batches):
        if not len(s):
            break
        batch = s.next_batch(size)
        batches.append(batch)
        s.complete(batch, [result_of(w) for w in batch])
        events.extend(s.events())
    return batches, events


def test_a_batch_takes_windows_round_robin_across_jobs() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    for job in "abc":
        s.add(job, Stream(job, 10))

    batch = s.next_batch(6)

    assert [w.job for w in batch] == ["a", "b", "c", "a", "b", "c"]
    assert [w.seq for w in batch] == [0, 0, 0, 1, 1, 1]
    assert all(w.window.job == w.job for w in batch)


def test_a_short_job_finishes_before_a_long_one_admitted_earlier() -> None:
    # Given a 40-window job already running when a 3-window job arrives
    s: Scheduler[Win, Any] = Scheduler()
    s.add("long", Stream("long", 40), expected_seconds=1200)
    first = s.next_batch(4)
    s.complete(first, [result_of(w) for w in first])
    s.add("short", Stream("short", 3), expected_seconds=90)

    # When batches of 4 run
    batches, events = drive(s, 4)

    # Then the short job is done within two batches, well before the long one
    finished = [e.job for e in events]
    assert finished == ["short", "long"]
    short_batches = [i for i, b in enumerate(batches) if any(w.job == "short" for w in b)]
    assert short_batches == [0, 1] or short_batches == [0]
    assert len(batches) == 10  # 40 + 3 windows, 4 a batch, no batch wasted
    long_done = next(e for e in events if e.job == "long")
    assert long_done.results == [("long", i) for i in range(40)]


def test_jobs_join_and_leave_between_batches() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("a", Stream("a", 2))
    b1 = s.next_batch(4)
    assert [w.job for w in b1] == ["a", "a"]

    s.add("b", Stream("b", 5))  # joins while a's batch is in flight
    s.complete(b1, [result_of(w) for w in b1])
    b2 = s.next_batch(4)
    assert [w.job for w in b2] == ["b", "b", "b", "b"]
    assert [e.job for e in s.events()] == ["a"]  # a left as soon as its stream ended
    assert s.jobs == ["b"]

    s.add("c", Stream("c", 1))
    s.complete(b2, [result_of(w) for w in b2])
    b3 = s.next_batch(4)
    assert sorted(w.job for w in b3) == ["b", "c"]
    s.complete(b3, [result_of(w) for w in b3])
    s.next_batch(4)  # finds both streams exhausted
    assert sorted(e.job for e in s.events()) == ["b", "c"]
    assert not len(s)


def test_removing_one_job_leaves_the_others_untouched() -> None:
    # Given three jobs with windows of each in flight
    streams = {job: Stream(job, 4) for job in "abc"}
    s: Scheduler[Win, Any] = Scheduler()
    for job, stream in streams.items():
        s.add(job, stream)
    batch = s.next_batch(6)
    assert {w.job for w in batch} == {"a", "b", "c"}

    # When b is cancelled mid-batch and the batch's results come back
    assert s.remove("b")
    s.complete(batch, [result_of(w) for w in batch])

    # Then b's pending windows and results are gone and its stream is closed...
    assert "b" not in s and s.pending("b") == 0
    assert streams["b"].closed
    # ...and a and c carry on to complete transcripts with every window, in order
    batches, events = drive(s, 6)
    assert all(w.job != "b" for b in batches for w in b)
    assert {e.job for e in events} == {"a", "c"}
    for e in events:
        assert isinstance(e, JobFinished)
        assert e.results == [(e.job, i) for i in range(4)]
    assert not s.remove("b")  # removing twice is harmless


def test_results_for_a_job_removed_and_admitted_again_are_not_mixed_up() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("a", Stream("a", 2))
    stale = s.next_batch(2)
    s.remove("a")  # lease lost...
    s.add("a", Stream("a", 2))  # ...and the job claimed again, a new attempt
    fresh = s.next_batch(2)
    s.complete(stale, [("stale", 0), ("stale", 1)])
    s.complete(fresh, [result_of(w) for w in fresh])
    s.next_batch(2)
    (event,) = s.events()
    assert isinstance(event, JobFinished) and event.results == [("a", 0), ("a", 1)]


def test_read_ahead_is_bounded_per_job_and_in_all() -> None:
    streams = {job: Stream(job, 1000) for job in "abc"}
    s: Scheduler[Win, Any] = Scheduler(read_ahead=4)
    for job, stream in streams.items():
        s.add(job, stream)
    consumed = dict.fromkeys(streams, 0)
    for _ in range(20):
        batch = s.next_batch(8)
        for w in batch:
            consumed[w.job] += 1
        for job, stream in streams.items():
            assert stream.pulled - consumed[job] <= 4  # decoded but not yet batched
        assert s.buffered <= 8 + len(streams)
        s.complete(batch, [result_of(w) for w in batch])
    # nothing was decoded far ahead of what ran: 20 batches of 8 out of 3000 windows
    assert sum(st.pulled for st in streams.values()) <= 20 * 8 + 3 * 4


def test_a_stream_that_raises_fails_only_its_job() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("good", Stream("good", 3))
    s.add("poison", Stream("poison", 5, fail_after=1))
    s.add("other", Stream("other", 2))

    _, events = drive(s, 2)

    failed = [e for e in events if isinstance(e, JobFailed)]
    assert [e.job for e in failed] == ["poison"]
    assert isinstance(failed[0].error, InvalidMedia)
    finished = {e.job: e.results for e in events if isinstance(e, JobFinished)}
    assert finished == {"good": [("good", i) for i in range(3)], "other": [("other", i) for i in range(2)]}


def test_a_failed_window_fails_its_job_and_no_other() -> None:
    class Runner:
        name = model_name = device = "fake"

        def run(self, batch: list[Work[Win]]) -> list[tuple[str, int]]:
            if any(w.job == "bad" for w in batch):
                raise RuntimeError("this window cannot be decoded")
            return [result_of(w) for w in batch]

    s: Scheduler[Win, Any] = Scheduler()
    for job in ("a", "bad", "c"):
        s.add(job, Stream(job, 2))
    batch = s.next_batch(6)
    outcomes = run_isolating(Runner(), batch)  # type: ignore[arg-type]
    s.complete(batch, outcomes)
    s.next_batch(6)

    events = {e.job: e for e in s.events()}
    assert isinstance(events["bad"], JobFailed) and "cannot be decoded" in str(events["bad"].error)
    assert isinstance(events["a"], JobFinished) and events["a"].results == [("a", 0), ("a", 1)]
    assert isinstance(events["c"], JobFinished)


def test_a_stream_still_decoding_does_not_hold_the_batch() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("slow", Stream("slow", 2, not_ready_first=2))
    assert s.next_batch(4) == []  # nothing decoded yet: the worker waits, nothing is lost
    s.add("fast", Stream("fast", 3))
    batch = s.next_batch(4)
    assert [w.job for w in batch] == ["fast"] * 3  # slow still NOT_READY this round
    later = s.next_batch(4)
    assert [w.job for w in later] == ["slow", "slow"]


def test_priority_orders_jobs_and_aging_prevents_starvation() -> None:
    s: Scheduler[Win, Any] = Scheduler(age_after=3)
    s.add("bulk", Stream("bulk", 100), priority=1)
    s.add("urgent", Stream("urgent", 100), priority=0)
    served = [s.next_batch(1)[0].job for _ in range(8)]
    # urgent first; bulk, skipped 3 batches in a row, is aged up to urgent's class and runs
    assert served[:3] == ["urgent"] * 3
    assert "bulk" in served[3:]


def test_shortest_remaining_job_goes_first_when_there_are_more_jobs_than_slots() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("hour", Stream("hour", 120), expected_seconds=3600)
    s.add("minute", Stream("minute", 2), expected_seconds=60)
    s.add("unknown", Stream("unknown", 5))
    assert [w.job for w in s.next_batch(2)] == ["minute", "hour"]


def test_progress_counts_only_the_windows_done_without_a_gap() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("a", Stream("a", 3))
    batch = s.next_batch(3)
    s.complete([batch[1]], [result_of(batch[1])])
    assert s.progress("a") == 0.0  # window 0 still running
    s.complete([batch[0]], [result_of(batch[0])])
    assert s.progress("a") == 60.0
    assert s.in_flight("a") == 1


def test_a_stream_with_no_windows_finishes_with_no_results() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("silence", Stream("silence", 0))
    assert s.next_batch(4) == []
    assert s.events() == [JobFinished("silence", [])]


def test_misuse_is_refused() -> None:
    s: Scheduler[Win, Any] = Scheduler()
    s.add("a", Stream("a", 1))
    with pytest.raises(ValueError):
        s.add("a", Stream("a", 1))
    with pytest.raises(ValueError):
        s.next_batch(0)
    batch = s.next_batch(1)
    with pytest.raises(ValueError):
        s.complete(batch, [])


def test_a_prefetched_stream_says_not_ready_until_its_window_is_decoded() -> None:
    release, damaged, closed = threading.Event(), threading.Event(), threading.Event()

    def decoding() -> Iterator[Win]:
        try:
            release.wait(5)
            yield Win("a", 0)
            damaged.wait(5)
            raise InvalidMedia("the audio stream could not be decoded")
        finally:
            closed.set()

    s: Scheduler[Win, Any] = Scheduler()
    s.add("a", prefetch(decoding()))
    assert s.next_batch(2) == []  # the decoder thread has nothing yet: no wait, no loss
    release.set()
    deadline = time.monotonic() + 5
    batch: list[Work[Win]] = []
    while not batch and time.monotonic() < deadline:
        batch = s.next_batch(2)
    assert [w.window for w in batch] == [Win("a", 0)]
    s.complete(batch, [result_of(w) for w in batch])
    damaged.set()
    while "a" in s and time.monotonic() < deadline:
        s.next_batch(2)
    (event,) = s.events()
    assert isinstance(event, JobFailed) and isinstance(event.error, InvalidMedia)  # raised on the thread, failed here
    assert closed.wait(5)


def test_removing_a_prefetched_job_stops_its_decoder() -> None:
    produced = []
    closed = threading.Event()

    def endless() -> Iterator[Win]:
        try:
            for i in itertools.count():
                produced.append(i)
                yield Win("a", i)
        finally:
            closed.set()

    s: Scheduler[Win, Any] = Scheduler()
    s.add("a", prefetch(endless(), depth=2))
    s.remove("a")
    assert closed.wait(5)
    assert len(produced) <= 4  # the queue's depth, the item in hand, and one more at most


def test_closing_a_prefetched_stream_waits_for_the_decode_in_progress() -> None:
    """The worker closes a job's media right after removing it (cancel, lost lease, SIGTERM):
    by then the decoder thread must be out of the media, not mid-decode."""
    decoding, finish, left = threading.Event(), threading.Event(), threading.Event()

    def slow() -> Iterator[Win]:
        try:
            decoding.set()
            finish.wait(5)  # a long decode (PyAV releases the GIL meanwhile)
            yield Win("a", 0)
            yield Win("a", 1)
        finally:
            left.set()

    stream = prefetch(slow())
    assert decoding.wait(5)
    threading.Timer(0.2, finish.set).start()
    stream.close()
    assert left.is_set()  # close returned only once the thread had left (and closed) the source
