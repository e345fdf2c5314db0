"""A job's progress between its batches: exact at each batch's end, moved on at the worker's
pace in between (so a long job on a CPU moves every heartbeat, not every half minute), never
past what one more batch would add, never back, never 100 before the commit."""

from __future__ import annotations

from gpu_container.worker.progress import FIRST_STEP_SECONDS, Pace, Speed
from tests.fakes import Clock


def test_between_batches_it_moves_at_the_measured_pace_up_to_one_more_batch() -> None:
    clock = Clock()
    pace = Pace(Speed(), clock=clock)
    pace.advance(0, 1200)  # a 20-minute file enters the loop
    clock.now += 25
    pace.advance(60, 1200)  # its first batch: 60 s of audio in 25 s
    assert pace.percent() == 5

    clock.now += 12.5  # half a batch later
    assert pace.percent() == 7  # 90 s of 1200
    clock.now += 100  # the next batch is late: shown no further than it would take it
    assert pace.percent() == 10
    pace.advance(120, 1200)
    assert pace.percent() == 10  # never back


def test_a_jobs_first_batch_moves_at_the_pace_of_the_workers_earlier_jobs() -> None:
    clock = Clock()
    speed = Speed(per_second=2.4)
    pace = Pace(speed, clock=clock)
    pace.advance(0, 600)
    clock.now += 5
    assert pace.percent() == 2  # 12 s of 600
    clock.now += 60
    assert pace.percent() == int(100 * FIRST_STEP_SECONDS / 600)  # at most a window ahead


def test_it_stays_below_100_until_the_commit() -> None:
    clock = Clock()
    pace = Pace(Speed(per_second=10), clock=clock)
    pace.advance(0, 20)
    pace.advance(20, 20)
    clock.now += 60
    assert pace.percent() == 99


def test_nothing_is_shown_before_the_audio_is_known() -> None:
    assert Pace(Speed(per_second=10)).percent() == 0
