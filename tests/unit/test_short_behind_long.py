"""A CPU worker holding a long file serves a short job claimed meanwhile promptly: with the
worker's CPU batching (default_batching) and its scheduler, the short job's last result comes
within a number of window-times that does not grow with the long file. On a CPU a batch costs
about one window-time per window it holds (cores are busy with one window already: bench/RESULTS.md),
so the test counts window-times from the short job joining to its result."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gpu_container.worker.batches import default_batching
from gpu_container.worker.scheduler import JobFinished, Scheduler


@dataclass(frozen=True)
class Window:
    end: float


def windows(n: int) -> list[Window]:
    return [Window(30.0 * (i + 1)) for i in range(n)]


def short_job_wait(long_windows: int, batch_size: int) -> int:
    """Window-times from the short job joining (during the long file's first batch) to its result."""
    scheduler: Scheduler[Window, str] = Scheduler(read_ahead=8)
    scheduler.add("long", windows(long_windows), expected_seconds=30.0 * long_windows)
    batch = scheduler.next_batch(batch_size)  # under way when the short job is claimed
    scheduler.add("short", windows(1), expected_seconds=4.0)
    waited = 0
    while True:
        waited += len(batch)  # the batch's cost on a CPU
        scheduler.complete(batch, ["text"] * len(batch))
        if any(isinstance(e, JobFinished) and e.job == "short" for e in scheduler.events()):
            return waited
        batch = scheduler.next_batch(batch_size)


@pytest.mark.parametrize("long_windows", [10, 40, 400])  # 5 min, a 20 min file, 3 h 20
def test_a_short_job_beside_a_long_file_waits_three_small_batches_at_most(long_windows: int) -> None:
    _held, cpu_batch = default_batching("cpu", "tiny.en")

    waited = short_job_wait(long_windows, cpu_batch)

    # the batch under way, its own, and one more: a job's end is seen when the scheduler next pulls
    # its exhausted stream, at the next batch's filling (the worker reads events after that batch)
    assert waited <= 3 * cpu_batch <= 6
    assert short_job_wait(long_windows, 8) > waited  # what B 8 cost (a 4 s job took 4.0 s, not 1.9 s)
