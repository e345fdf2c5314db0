"""One scaler run at a time, however many wakes arrive: the lease in the jobs table (moto,
DynamoDB's conditional writes) lets one invocation run, counts the others' wakes on it, and the
holder serves them in a next round that starts a window after its last one."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from batchscribe.repository.locks import RunLease
from batchscribe.scaler import SCALER_LEASE, Coalescer, Decision, Pool, Runs, Workers, run_scaler, scale
from batchscribe.settings import ScalerSettings
from batchscribe_cli.local import LocalContext
from tests.conftest import Stack, reset_caches
from tests.fakes import Clock

POOL = Pool(name="gpu", queue_url="q", max_workers=10, jobs_per_worker=4)


class SharedCompute:
    """Batch as every scaler invocation sees it: one set of workers, whichever run submits."""

    def __init__(self) -> None:
        self.active = 0
        self.submitted: list[int] = []
        self._lock = threading.Lock()

    def workers(self, pool: Pool) -> Workers:
        with self._lock:
            return Workers(active=self.active)

    def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
        with self._lock:
            self.submitted.append(count)
            self.active += count

    def cancel(self, job_ids: Any, reason: str) -> None:
        raise AssertionError("nothing is stuck")


def test_the_lease_is_held_by_one_counts_wakes_and_lapses_when_its_holder_dies(aws_stack: Stack) -> None:
    clock = Clock(1000.0)
    a, b = (RunLease(aws_stack.table, "scaler", lease_seconds=90, clock=clock) for _ in range(2))

    assert a.take("A")[0]
    taken, state = b.take("B")
    assert not taken and state.holder == "A"
    assert b.note_wake("A") and b.note_wake("A")  # two wakes while A holds it
    assert a.start("A") == (1000.0, 2)  # A's round serves them
    assert b.note_wake("A")  # one more during A's round...
    assert not a.release("A")  # ... so A may not leave: it owes a round
    assert a.start("A") == (1000.0, 1) and a.release("A")
    assert not b.note_wake("A")  # A is gone: B takes it itself
    assert b.take("B")[0] and not a.take("A")[0]

    clock.now += 91  # B died holding it: the lease lapses
    assert a.take("A")[0]
    assert b.start("B") is None and not b.release("B") and not b.release("B", force=True)
    assert a.state().holder == "A"


def test_twelve_concurrent_runs_one_submits_and_the_others_join_its_next_round(aws_stack: Stack) -> None:
    """Given 12 scaler invocations at once (each its own Lambda environment: its own lease
    object, one table) over a backlog of 8, and a 13th that comes while the first round runs,
    when the first to take the lease runs until every other has come and gone, then only it
    submits, and the wakes it owes cost one more round, a window later, which finds the
    workers it started and submits nothing."""
    compute = SharedCompute()
    round_began, others_done = threading.Event(), threading.Event()
    returned: list[Runs[list[Decision]]] = []
    rounds: list[int] = []

    def task() -> list[Decision]:
        rounds.append(len(rounds))
        if len(rounds) == 1:  # a long first round: every other invocation comes and goes meanwhile
            round_began.set()
            assert others_done.wait(30)
        return scale([POOL], lambda _pool: (8, 0), compute)

    def invocation(_: int) -> Runs[list[Decision]]:
        lease = RunLease(aws_stack.table, SCALER_LEASE, lease_seconds=60)
        runs = Coalescer(lease, window=0.3).run(task, until=time.time() + 60)
        returned.append(runs)
        if sum(r.coalesced for r in returned) == 12:
            others_done.set()
        return runs

    with ThreadPoolExecutor(max_workers=13) as pool:
        at_once = [pool.submit(invocation, i) for i in range(12)]
        assert round_began.wait(30)
        late = pool.submit(invocation, 12)
        outcomes = [f.result() for f in [*at_once, late]]

    (holder,) = [r for r in outcomes if not r.coalesced]
    assert compute.submitted == [2]  # ceil(8 / 4) workers, once
    assert [[d.submitted for d in decisions] for decisions in holder.results] == [[2], [0]]
    # A round's start clears every wake it finds, and reports how many: at least the late one.
    # (moto reads ALL_OLD outside its write lock, so a wake written while the first start is
    # being written may go unreported here; DynamoDB returns the old image atomically.)
    assert 1 <= holder.wakes <= 12
    assert RunLease(aws_stack.table, SCALER_LEASE, 60).state().holder is None  # released


def test_without_the_lease_concurrent_runs_each_submit() -> None:
    """What the lease prevents: two runs that both look before either submits both start
    workers for the same backlog."""
    compute = SharedCompute()
    both_looked = threading.Barrier(2)

    class Racing(SharedCompute):
        def workers(self, pool: Pool) -> Workers:
            seen = compute.workers(pool)
            both_looked.wait(10)
            return seen

        def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
            compute.submit(pool, count)

    settings = ScalerSettings(pools=[POOL])  # no table: no lease
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: run_scaler(settings, lambda: scale([POOL], lambda _p: (8, 0), Racing()), 0), range(2)))
    assert compute.submitted == [2, 2]


def test_a_burst_of_wakes_gives_rounds_a_window_apart_and_serves_the_last_wake(aws_stack: Stack) -> None:
    """Given 40 wakes over about 1.2 s, each its own invocation, and a window of 0.25 s, then
    rounds never overlap, start at least a window apart (as the lease recorded them), number
    no more than the burst's length allows, and one does its work after the last wake came."""
    window, running = 0.25, threading.Lock()
    starts: list[float] = []  # each round's start, as the lease recorded it
    began: list[float] = []  # when each round's work began
    reader = RunLease(aws_stack.table, SCALER_LEASE, 60)

    def task() -> None:
        assert running.acquire(blocking=False), "two rounds at once"
        try:
            began.append(time.time())
            start = reader.state().last_start
            assert start is not None
            starts.append(start)
        finally:
            running.release()

    arrivals: list[float] = []

    def wake() -> Runs[None]:
        arrivals.append(time.time())
        return Coalescer(RunLease(aws_stack.table, SCALER_LEASE, 60), window).run(task, until=time.time() + 60)

    threads = []
    for _ in range(40):
        threads.append(threading.Thread(target=wake))
        threads[-1].start()
        time.sleep(0.03)  # the pace of the burst, not a wait for a state
    for t in threads:
        t.join(30)

    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps and min(gaps) >= window, gaps
    assert len(starts) <= (max(arrivals) - min(arrivals)) / window + 2
    assert max(began) >= max(arrivals)  # the last wake was served by a round after it


def test_the_handler_runs_under_the_lease_and_a_wake_that_finds_it_held_returns_at_once(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambdas.scaler.handler import handler

    settings = ScalerSettings(
        pools=[Pool(name="gpu", queue_url=aws_stack.jobs_queue_url, max_workers=2)], lease_table=aws_stack.table
    )
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    reset_caches()
    lease = RunLease(aws_stack.table, SCALER_LEASE, 60)

    assert handler({}, LocalContext()) == [
        {"pool": "gpu", "backlog": 0, "active": 0, "submitted": 0, "moved": 0, "held_seconds": 0.0, "failed_starts": 0}
    ]
    assert lease.state().holder is None and lease.state().last_start is not None

    assert lease.take("another run")[0]
    assert handler({}, LocalContext()) == []  # coalesced: the holder owes a round
    assert lease.state().pending == 1
