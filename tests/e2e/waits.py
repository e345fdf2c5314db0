"""The local stack in the end-to-end tests: starting one (`running_stack`), waiting on it for a
condition, for its workers to be gone (so a job stays queued while a test looks at it), and
what to wait on (what the workers logged, the status changes a job went through)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchscribe.settings import Timings
from batchscribe_cli.local import LocalConfig, LocalStack


def running_stack(
    factory: pytest.TempPathFactory, *, idle_exit_seconds: float = 3, name: str = "local", **config: Any
) -> Iterator[LocalStack]:
    """A local stack for a module's tests (a fixture yields from it): any free port, its own
    data folder, one worker that exits after `idle_exit_seconds` idle, nothing printed;
    `config` sets any other LocalConfig field."""
    settings: dict[str, Any] = {
        "port": 0,
        "max_workers": 1,
        "data_dir": factory.mktemp(name),
        "timings": Timings.local().replace(idle_exit_seconds=idle_exit_seconds),
        "quiet": True,
        **config,
    }
    with LocalStack(LocalConfig(**settings), say=lambda _line: None) as stack:
        yield stack


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
