"""The gate between the worker's claiming side and its model loop (pure: plain threads, an
injected clock): slots, the hand-off, and the exit decision taken with the counts."""

from __future__ import annotations

import threading

from gpu_container.worker.handoff import Gate
from tests.fakes import Clock


def gate(clock: Clock, max_held: int = 2, max_jobs: int = 0) -> Gate[str]:
    return Gate(max_held=max_held, max_jobs=max_jobs, idle_exit_seconds=10, clock=clock)


def test_claims_are_reserved_within_the_held_and_max_jobs_caps() -> None:
    g = gate(Clock(), max_held=2, max_jobs=3)
    assert g.reserve() and g.reserve() and not g.reserve()  # two slots
    assert g.claimed() and g.room() == 0
    g.unreserve()  # the second message was not claimable
    assert g.room() == 1 and g.reserve() and g.claimed()
    g.to_finishing()
    g.finished()
    assert g.room() == 1  # 2 claimed of max_jobs 3: one more
    assert g.reserve() and g.claimed() and g.room() == 0 and g.claims == 3


def test_a_claim_that_completes_after_the_gate_closed_is_reported() -> None:
    g = gate(Clock())
    assert g.reserve()
    g.close()
    assert not g.claimed()  # the caller gives the job back...
    assert g.held == 1 and g.busy
    g.done()  # ...and lets go of it
    assert not g.busy and not g.reserve()


def test_the_stop_event_closes_the_gate_without_its_lock() -> None:
    stop = threading.Event()
    g: Gate[str] = Gate(max_held=2, idle_exit_seconds=10, clock=Clock(), stop=stop)
    stop.set()  # what a signal handler does
    assert g.closed and not g.reserve() and not g.hand_over("job")


def test_the_idle_exit_never_fires_while_a_claim_is_in_flight() -> None:
    clock = Clock()
    g = gate(clock)
    assert g.reserve()
    clock.now += 100
    assert g.close_if_done() is None and not g.closed
    g.unreserve()  # nothing came of it: idle since long ago
    assert g.close_if_done() == "idle" and g.closed


def test_the_idle_timer_restarts_when_a_job_leaves() -> None:
    clock = Clock()
    g = gate(clock)
    assert g.reserve() and g.claimed()
    clock.now += 100
    g.done()  # failed while being prepared, say: it was work
    clock.now += 9
    assert g.close_if_done() is None
    clock.now += 1
    assert g.close_if_done() == "idle"


def test_max_jobs_exits_once_every_claimed_job_is_done() -> None:
    g = gate(Clock(), max_held=2, max_jobs=1)
    assert g.reserve() and g.claimed()
    assert g.close_if_done() is None
    g.to_finishing()
    assert g.close_if_done() is None  # being committed
    g.finished()
    assert g.close_if_done() == "max_jobs"


def test_ready_jobs_wake_the_loop_and_are_refused_once_closed() -> None:
    g = gate(Clock())
    woke = threading.Event()

    def loop() -> None:
        g.wait_ready(timeout=30)
        woke.set()

    waiter = threading.Thread(target=loop)
    waiter.start()
    assert g.hand_over("a")
    assert woke.wait(10)
    waiter.join(10)
    assert g.take() == ["a"] and g.take() == []
    g.close()
    assert not g.hand_over("b") and g.take() == []


def test_a_batchs_jobs_free_their_slots_together() -> None:
    # Given a full gate of four held jobs
    g = gate(Clock(), max_held=4)
    for _ in range(4):
        assert g.reserve() and g.claimed()
    assert g.room() == 0
    # When three jobs of one batch go to finishing together
    g.to_finishing(3)
    # Then the claiming side sees room for all three at once, and the worker stays busy
    assert g.room() == 3 and g.busy and (g.held, g.finishing) == (1, 3)
