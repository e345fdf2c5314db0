"""Waiting on the local stack in the end-to-end tests: for a condition, for its workers to be
gone (so a job stays queued while a test looks at it), and what to wait on (what the workers
logged, the status changes a job went through)."""

from __future__ import annotations

import time
from collections.abc import Callable

from batchscribe_cli.local import LocalStack


def wait_until(predicate: Callable[[], bool], timeout: float = 60, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"condition not reached in {timeout} s")


def wait_for_no_workers(stack: LocalStack, timeout: float = 60) -> None:
    compute = stack.compute
    assert compute is not None
    wait_until(lambda: compute.active(stack.pool) == 0, timeout)


def hold_workers_back(stack: LocalStack) -> None:
    """No worker starts from now on, and none is left running (an idle one of an earlier test
    would otherwise take the next job at once)."""
    stack.set_max_workers(0)
    wait_for_no_workers(stack)


def worker_logged(stack: LocalStack, *parts: str) -> bool:
    """Whether one line that a worker of the stack wrote holds every one of `parts`."""
    logs = sorted((stack.config.data_dir / "workers").glob("*.log"))
    return any(all(p in line for p in parts) for log in logs for line in log.read_text(errors="replace").splitlines())


def statuses(stack: LocalStack, job_id: str) -> list[str]:
    """The statuses a job went through, as the stack's stream of the jobs table saw them."""
    return [after for job, _, after in list(stack.transitions) if job == job_id]
