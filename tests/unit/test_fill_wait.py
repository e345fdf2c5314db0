"""A batch short of B waits a moment (batches.FILL_WAIT_SECONDS) for the first windows of jobs
just taken on, never for a job already under way, and never longer than FILL_WAIT_MAX_SECONDS in all: a
burst of short jobs shares its first batch instead of one job running alone while the others
decode. A fake clock and streams that say NOT_READY until told, no threads."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gpu_container.worker import batches as batches_module
from gpu_container.worker.batches import FILL_WAIT_MAX_SECONDS, FILL_WAIT_SECONDS, Batches
from gpu_container.worker.scheduler import NOT_READY, JobFinished, NotReady, Work
from tests.fakes import Clock, Win

KEY = ("fake", "tiny.en")


class Gated:
    """A job's windows: NOT_READY until `open` is set for the window it stands at."""

    def __init__(self, job: str, n: int, ready_from: int = 0) -> None:
        self.job, self.n, self.duration = job, n, n * 30.0
        self.open = ready_from  # windows below this index are decoded
        self.opened_all = False

    def windows(self) -> Iterator[Win | NotReady]:
        i = 0
        while i < self.n:
            if i < self.open or self.opened_all:
                yield Win(self.job, i)
                i += 1
            else:
                yield NOT_READY


class Recording:
    name, model_name, device = "fake", "tiny.en", "cuda"

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []

    def run(self, batch: Sequence[Work[Win]]) -> list[tuple[str, int]]:
        ids = [(w.job, w.window.index) for w in batch]
        self.batches.append(ids)
        return ids


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> tuple[Batches, Recording, Clock]:
    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)  # no decoding thread
    runner, clock = Recording(), Clock(1000.0)
    batches = Batches(lambda _key: runner, batch_size=4, read_ahead=4, pack=False, clock=clock)  # type: ignore[arg-type,return-value]
    return batches, runner, clock


def test_a_burst_shares_its_first_batch(setup: tuple[Batches, Recording, Clock]) -> None:
    batches, runner, clock = setup
    a, b = Gated("a", 1, ready_from=1), Gated("b", 1)  # b's one window is still decoding
    batches.add("a", KEY, a, None)  # type: ignore[arg-type]
    batches.add("b", KEY, b, None)  # type: ignore[arg-type]

    assert not batches.step().ran  # a alone would fill a quarter of the batch: wait for b
    clock.now += FILL_WAIT_SECONDS / 3
    b.open = 1
    events: list[Any] = []
    while len(events) < 2:
        events += batches.step().events
    assert runner.batches == [[("a", 0), ("b", 0)]]  # one batch for both
    assert {e.job for e in events if isinstance(e, JobFinished)} == {"a", "b"}


def test_the_wait_ends_after_fill_wait_whatever_is_still_decoding(setup: tuple[Batches, Recording, Clock]) -> None:
    batches, runner, clock = setup
    a, b = Gated("a", 1, ready_from=1), Gated("b", 1)
    batches.add("a", KEY, a, None)  # type: ignore[arg-type]
    batches.add("b", KEY, b, None)  # type: ignore[arg-type]
    assert not batches.step().ran
    clock.now += FILL_WAIT_SECONDS * 0.5
    assert not batches.step().ran
    clock.now += FILL_WAIT_SECONDS * 0.6  # past the whole wait: a runs without b
    assert batches.step().ran
    assert runner.batches == [[("a", 0)]]


def test_the_wait_goes_on_while_jobs_keep_arriving_at_most_fill_wait_max(
    setup: tuple[Batches, Recording, Clock],
) -> None:
    """A burst reaches the loop in waves (SQS gives ten messages a receive, each claimed on a
    pool of threads): a job taken on less than FILL_WAIT_SECONDS ago keeps the short batch
    waiting, past FILL_WAIT_SECONDS from the first, but never past FILL_WAIT_MAX_SECONDS."""
    batches, runner, clock = setup
    batches.add("a", KEY, Gated("a", 1, ready_from=1), None)  # type: ignore[arg-type]
    batches.add("w0", KEY, Gated("w0", 1), None)  # type: ignore[arg-type]  # still decoding
    start, step = clock.now, FILL_WAIT_SECONDS * 0.8
    waves = 0
    while not batches.step().ran:
        waves += 1
        clock.now += step
        batches.add(f"w{waves}", KEY, Gated(f"w{waves}", 1), None)  # type: ignore[arg-type]  # still decoding
    waited = clock.now - start
    assert waited > 2 * FILL_WAIT_SECONDS  # long past one FILL_WAIT_SECONDS while jobs kept coming...
    assert FILL_WAIT_MAX_SECONDS <= waited < FILL_WAIT_MAX_SECONDS + step  # ...and ended at the cap
    assert runner.batches == [[("a", 0)]]


def test_a_job_under_way_is_never_waited_for(setup: tuple[Batches, Recording, Clock]) -> None:
    """A long file whose next window is decoding holds back no batch: it has yielded windows."""
    batches, runner, _clock = setup
    long, short = Gated("long", 10, ready_from=1), Gated("short", 1, ready_from=1)
    batches.add("long", KEY, long, None)  # type: ignore[arg-type]
    assert batches.step().ran  # long's first window: no one else is starting
    batches.add("short", KEY, short, None)  # type: ignore[arg-type]
    assert batches.step().ran  # short's window is ready; long's next is decoding: no wait
    assert runner.batches == [[("long", 0)], [("short", 0)]]


def test_a_full_batch_runs_at_once(setup: tuple[Batches, Recording, Clock]) -> None:
    batches, runner, _clock = setup
    a, b = Gated("a", 4, ready_from=4), Gated("b", 1)
    batches.add("a", KEY, a, None)  # type: ignore[arg-type]
    batches.add("b", KEY, b, None)  # type: ignore[arg-type]
    assert batches.step().ran  # B windows ready: nothing to wait for
    assert runner.batches == [[("a", 0), ("a", 1), ("a", 2), ("a", 3)]]


def test_no_wait_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)
    runner = Recording()
    batches = Batches(lambda _key: runner, batch_size=4, read_ahead=4, pack=False, fill_wait=0)  # type: ignore[arg-type,return-value]
    batches.add("a", KEY, Gated("a", 1, ready_from=1), None)  # type: ignore[arg-type]
    batches.add("b", KEY, Gated("b", 1), None)  # type: ignore[arg-type]
    assert batches.step().ran and runner.batches == [[("a", 0)]]


def test_a_job_alone_has_a_whole_batch_decoded_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job alone, its windows decoded on the real prefetch thread, and B 6
    from gpu_container.worker import windows as windows_module

    queues: list[Any] = []

    def spy(source: Any, depth: int = 2) -> Any:
        queues.append(windows_module.prefetch(source, depth))
        return queues[-1]

    monkeypatch.setattr(batches_module, "prefetch", spy)
    runner = Recording()
    batches = Batches(lambda _key: runner, batch_size=6, read_ahead=8, pack=False, fill_wait=0)  # type: ignore[arg-type,return-value]
    batches.add("long", KEY, Gated("long", 20, ready_from=20), None)  # type: ignore[arg-type]

    # When the thread has decoded what its queue holds
    deadline = time.monotonic() + 10
    while queues[0]._queue.qsize() < 6 and time.monotonic() < deadline:
        time.sleep(0.01)

    # Then the first batch is a whole batch of its windows, not the two a queue of 2 held
    assert batches.step().ran
    assert runner.batches == [[("long", i) for i in range(6)]]
    batches.remove("long")


def test_with_packing_a_batch_is_short_until_its_windows_fill_b_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packed, three ready 5 s windows are one row of B = 2, not a full batch of 3 windows: the
    batch waits for a fourth short job still decoding, and all four share the batch."""
    from gpu_container.worker.batched import DecodeOptions
    from tests.unit.test_packing import Ear, runs, window

    class Short:
        def __init__(self, level: int, ready: bool) -> None:
            self.level, self.ready, self.duration = level, ready, 5.0

        def windows(self) -> Iterator[Any]:
            while not self.ready:
                yield NOT_READY
            yield window(self.level, 5.0)

    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)
    ear, clock = Ear(), Clock(1000.0)
    batches = Batches(lambda _key: ear, batch_size=2, read_ahead=2, clock=clock)
    streams = {f"j{n}": Short(n, ready=n < 4) for n in range(1, 5)}
    for job, stream in streams.items():
        batches.add(job, KEY, stream, DecodeOptions(language="en"))  # type: ignore[arg-type]

    assert not batches.step().ran  # three windows ready, but they fill one row of two
    clock.now += FILL_WAIT_SECONDS / 3
    streams["j4"].ready = True
    events: list[Any] = []
    while len(events) < 4:
        events += batches.step().events
    (rows,) = ear.batches  # one batch: all four in one row
    assert [sorted(lvl for lvl, _, _ in runs(r.window.audio)) for r in rows] == [[1, 2, 3, 4]]
    assert {e.job for e in events if isinstance(e, JobFinished)} == set(streams)
