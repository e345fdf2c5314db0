"""What runs in the next batch: a small, pure scheduler for cross-job batching.

The worker holds up to K claimed jobs. Each job brings a lazy iterator of windows (≤ 30 s of
speech, see windows.py); the scheduler pulls a few of them at a time (bounded read-ahead),
fills batches of up to B windows across jobs, routes each result back to its job, and says
when a job is finished (its stream is exhausted and every window it yielded has a result)
or failed (its stream raised, or the runner failed on one of its windows). It knows nothing
of models, AWS, threads or clocks, so tests drive it with plain objects.

Per-job state that matters to the job's contract (claim, fencing attempt, heartbeat,
outputs, log) lives in the worker's own per-job object, never here: a batch is a list of
`Work` items, each a reference to one window and the job key it came from, so removing one
job (cancel, failure, lost lease) drops only that job's pending windows, and a result that
arrives for a removed job is discarded.

Batch order (the choice, and why):
- Round-robin by job: a batch is filled in passes, one window per job per pass, until it is
  full. Every job with a window ready gets an equal share of each batch while K ≤ B, so a
  long file never holds a short one back: a 10-window job held next to a 600-window job
  finishes in ceil(10 / (B / K)) batches, as it would alone on a card of 1/K the size.
- Within a pass, jobs go in order of (priority class - aging, remaining seconds, admission).
  Shortest-remaining-first decides who gets the leftover slots of the last pass and, when
  more jobs are held than a batch has slots, who runs at all: it minimises the mean time to
  finish, so short jobs leave the worker (and free a claim slot) quickly. A job that had a
  window ready but got no slot for `age_after` consecutive batches moves up one priority
  class per `age_after` batches skipped, so nothing starves. The worker passes the job's
  priority class (high 0, normal 1, low 2: lower runs first), so batches fill in the same
  order as claims.
- With window packing (packing.py) a batch is bounded by the rows its windows pack into, not
  their count: `next_batch(size, fits)` adds windows in the same order while they still fit.
- Work-conserving here: `next_batch` never holds a batch back to wait for a fuller one; if only
  one job has windows, it fills the batch alone (up to its read-ahead). The worker's loop may
  wait a moment for jobs it has just taken on (batches.Batches, FILL_WAIT_SECONDS), asking
  `starting()` which of them have yielded nothing yet.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar


class NotReady:
    """Yielded by a window iterator whose next window is still being decoded (see
    windows.prefetch): the scheduler fills the batch from other jobs and asks again later."""

    _instance: NotReady | None = None

    def __new__(cls) -> NotReady:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_READY"


NOT_READY = NotReady()


class Timed(Protocol):
    """What the scheduler needs of a window: where it ends in its source (for progress)."""

    @property
    def end(self) -> float: ...


W = TypeVar("W", bound=Timed)
R = TypeVar("R")


class _Job(Generic[W, R]):
    """The scheduler's own bookkeeping for one held job (not the job's contract state)."""

    def __init__(
        self,
        key: str,
        source: Iterator[W | NotReady],
        options: Any,
        priority: int,
        expected_seconds: float | None,
        admitted: int,
    ) -> None:
        self.key = key
        self.source = source
        self.options = options
        self.priority = priority
        self.expected_seconds = expected_seconds
        self.admitted = admitted
        self.pending: deque[Work[W]] = deque()
        self.in_flight: set[int] = set()
        self.results: dict[int, R] = {}
        self.ends: dict[int, float] = {}
        self.next_seq = 0
        self.exhausted = False
        self.skipped = 0  # consecutive batches it had a window ready and got no slot
        self.contiguous = 0  # windows 0..contiguous-1 all have results
        self.done_seconds = 0.0

    @property
    def finished(self) -> bool:
        return self.exhausted and not self.pending and not self.in_flight

    def order(self, age_after: int) -> tuple[float, float, int]:
        aged = self.priority - self.skipped // max(1, age_after)
        remaining = (
            max(0.0, self.expected_seconds - self.done_seconds) if self.expected_seconds is not None else math.inf
        )
        return (aged, remaining, self.admitted)


@dataclass(frozen=True, eq=False)
class Work(Generic[W]):
    """One window of one job, as it sits in a batch. The runner reads `window` and
    `options`; the scheduler uses `job`, `seq` and the admission it came from."""

    job: str
    seq: int
    window: W
    options: Any
    _owner: Any = field(repr=False, compare=False)
    job_seconds: float | None = None  # the job's expected length (packing.py packs short jobs')


@dataclass(frozen=True)
class JobFinished(Generic[R]):
    """Every window the job's stream yielded has a result: `results` in source order."""

    job: str
    results: list[R]


@dataclass(frozen=True)
class JobFailed:
    """The job's window stream raised (undecodable media, over the duration limit) or the
    runner failed on one of its windows; its other windows were dropped."""

    job: str
    error: BaseException


JobEvent = JobFinished[Any] | JobFailed


class Scheduler(Generic[W, R]):
    """Held jobs, their pending windows, and which of them run in the next batch.

    read_ahead: the most windows buffered per job (decoded but not yet in a batch).
    max_buffered: the most windows buffered over all jobs (default: a batch's worth plus
        one per job); together they bound the memory held by decoded audio.
    age_after: a job skipped this many batches in a row moves up one priority class.
    """

    def __init__(self, *, read_ahead: int = 16, max_buffered: int | None = None, age_after: int = 4) -> None:
        if read_ahead < 1:
            raise ValueError("read_ahead must be at least 1")
        self.read_ahead = read_ahead
        self.max_buffered = max_buffered
        self.age_after = age_after
        self._jobs: dict[str, _Job[W, R]] = {}
        self._events: list[JobEvent] = []
        self._admissions = itertools.count()

    # ---- jobs join and leave ------------------------------------------------------------

    def add(
        self,
        job: str,
        windows: Iterable[W | NotReady],
        *,
        options: Any = None,
        priority: int = 0,
        expected_seconds: float | None = None,
    ) -> None:
        """Hold a job. `windows` is pulled lazily; it may yield NOT_READY, and whatever it
        raises fails this job alone. `options` travels with each window to the runner."""
        if job in self._jobs:
            raise ValueError(f"job {job!r} is already held")
        self._jobs[job] = _Job(job, iter(windows), options, priority, expected_seconds, next(self._admissions))

    def remove(self, job: str) -> bool:
        """Forget a job (cancel, failure, lost lease): its pending windows are dropped, its
        stream is closed, and results still in flight for it will be discarded. Other jobs
        are untouched. Returns whether the job was held."""
        state = self._jobs.pop(job, None)
        if state is None:
            return False
        state.pending.clear()
        _close(state.source)
        return True

    def fail(self, job: str, error: BaseException) -> None:
        """Fail a held job from outside (e.g. its heartbeat found the input gone)."""
        if self.remove(job):
            self._events.append(JobFailed(job, error))

    # ---- batches ------------------------------------------------------------------------

    def next_batch(self, size: int, fits: Callable[[Sequence[Work[W]]], bool] | None = None) -> list[Work[W]]:
        """Up to `size` windows from the held jobs, fairly (see the module docstring). An
        empty list while jobs are held means every stream is still decoding (NOT_READY).

        `fits(batch)`, when given, replaces the count: a job's next window joins the batch
        only if the batch with it still fits (packing.Packer: the windows still run in `size`
        rows); a job whose next window does not fit gets no more this batch, the others go on
        in the same order."""
        if size < 1:
            raise ValueError("a batch holds at least one window")
        self._refill(size)
        ready = sorted((j for j in self._jobs.values() if j.pending), key=lambda j: j.order(self.age_after))
        batch: list[Work[W]] = []
        served: set[str] = set()
        full: set[str] = set()  # jobs whose next window did not fit
        room = fits or (lambda candidate: len(candidate) <= size)
        added = True
        while added:
            added = False
            for state in ready:
                if not state.pending or state.key in full:
                    continue
                if not room([*batch, state.pending[0]]):
                    full.add(state.key)
                    continue
                work = state.pending.popleft()
                state.in_flight.add(work.seq)
                batch.append(work)
                served.add(state.key)
                added = True
        for state in ready:
            state.skipped = 0 if state.key in served else state.skipped + 1
        return batch

    def complete(self, batch: Sequence[Work[W]], results: Sequence[R | BaseException]) -> None:
        """Route each result to its job. A result that is an exception fails that job
        (the worker classifies it); results for jobs no longer held are discarded."""
        if len(batch) != len(results):
            raise ValueError(f"{len(results)} results for a batch of {len(batch)}")
        for work, result in zip(batch, results, strict=True):
            state = self._jobs.get(work.job)
            if state is None or state is not work._owner or work.seq not in state.in_flight:
                continue  # removed (or re-added) while in flight
            state.in_flight.discard(work.seq)
            if isinstance(result, BaseException):
                self.fail(work.job, result)
                continue
            state.results[work.seq] = result
            window = work.window  # a channel-split window reports its place in the whole job
            state.ends[work.seq] = getattr(window, "progress_end", None) or window.end
            while state.contiguous in state.results:
                state.done_seconds = max(state.done_seconds, state.ends[state.contiguous])
                state.contiguous += 1
            self._finish_if_done(state)

    def events(self) -> list[JobEvent]:
        """Jobs that finished or failed since the last call; they are no longer held."""
        out, self._events = self._events, []
        return out

    # ---- what the worker may look at ----------------------------------------------------

    @property
    def jobs(self) -> list[str]:
        return list(self._jobs)

    def __contains__(self, job: object) -> bool:
        return job in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def progress(self, job: str) -> float:
        """Source seconds transcribed without a gap from the start (0.0 if not held)."""
        state = self._jobs.get(job)
        return state.done_seconds if state else 0.0

    def pending(self, job: str) -> int:
        """Windows of `job` decoded and waiting for a batch."""
        state = self._jobs.get(job)
        return len(state.pending) if state else 0

    def in_flight(self, job: str) -> int:
        state = self._jobs.get(job)
        return len(state.in_flight) if state else 0

    @property
    def buffered(self) -> int:
        return sum(len(j.pending) for j in self._jobs.values())

    def ready_work(self) -> list[Work[W]]:
        """The windows ready now, every held job's (to look at, not to take)."""
        return [w for j in self._jobs.values() for w in j.pending]

    def starting(self) -> list[str]:
        """Jobs whose stream has yielded no window yet and is still open: their first window is
        being decoded (call `refill` first to take what is ready)."""
        return [j.key for j in self._jobs.values() if j.next_seq == 0 and not j.exhausted]

    def refill(self, size: int) -> None:
        """Pull the windows that are ready now (as `next_batch` would), to look before choosing."""
        self._refill(size)

    # ---- internals ----------------------------------------------------------------------

    def _refill(self, size: int) -> None:
        """Pull windows until every job has one ready and a full batch is buffered, one
        window at a time from the job with the fewest ready (then the batch order), within
        the read-ahead caps. A heap keeps the choice O(log jobs) a window: with 64 short jobs
        held, rescanning every job for every window pulled cost ~7 ms a step, 3 CPU-s a minute
        of audio (bench_host_ceiling)."""
        cap_total = self.max_buffered if self.max_buffered is not None else size + len(self._jobs)
        total = self.buffered
        heap = [
            (len(j.pending), j.order(self.age_after), n, j)
            for n, j in enumerate(self._jobs.values())
            if not j.exhausted and len(j.pending) < self.read_ahead
        ]
        heapq.heapify(heap)
        while heap:
            pending, order, n, state = heap[0]
            if pending and total >= min(size, cap_total):
                break  # every job has a window ready and a batch is buffered
            heapq.heappop(heap)
            if not self._pull(state):  # NOT_READY, exhausted or failed: not asked again this round
                if state.key not in self._jobs:
                    total = self.buffered  # it failed: its windows went with it
                continue
            total += 1
            if not state.exhausted and len(state.pending) < self.read_ahead:
                heapq.heappush(heap, (len(state.pending), order, n, state))

    def _pull(self, state: _Job[W, R]) -> bool:
        """One window from the job's stream; False when it has none to give now."""
        try:
            item = next(state.source)
        except StopIteration:
            state.exhausted = True
            self._finish_if_done(state)
            return False
        except Exception as exc:  # the job's own failure (bad media, too long): its alone
            self.fail(state.key, exc)
            return False
        if item is NOT_READY:
            return False
        window: W = item  # type: ignore[assignment]
        state.pending.append(Work(state.key, state.next_seq, window, state.options, state, state.expected_seconds))
        state.next_seq += 1
        return True

    def _finish_if_done(self, state: _Job[W, R]) -> None:
        if state.finished and self._jobs.get(state.key) is state:
            del self._jobs[state.key]
            self._events.append(JobFinished(state.key, [state.results[i] for i in range(state.next_seq)]))


def _close(source: Iterator[Any]) -> None:
    close = getattr(source, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()
