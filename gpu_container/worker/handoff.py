"""What the claiming side and the model loop share, under one lock: the gate.

It counts the jobs a worker holds (claimed and not yet finished: being prepared, ready, or
in the loop), the messages being claimed, the jobs being finished, and the claims made; it
passes ready jobs to the loop; and it decides, atomically with those counts, when the
worker stops admitting work. So:
- a claim is reserved before it is made, and refused once the gate is closed (or its stop
  event is set, which a signal handler may do without taking the lock): the idle exit
  cannot happen while a claim is in flight, and a claim that completes after the gate
  closed (SIGTERM) is reported as such, so its job is given back;
- a job prepared after the gate closed is not handed over (whoever holds it gives it back);
- the idle timer restarts whenever a job leaves the worker, and runs only while nothing is
  held, finishing or being claimed.
No AWS, no model: tests drive it with plain threads.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Gate(Generic[T]):
    def __init__(
        self,
        *,
        max_held: int,
        max_jobs: int = 0,
        idle_exit_seconds: float,
        clock: Callable[[], float],
        stop: threading.Event | None = None,
    ) -> None:
        self.max_held = max_held
        self.max_jobs = max_jobs  # 0: no cap
        self.idle_exit_seconds = idle_exit_seconds
        self.clock = clock
        self._cond = threading.Condition()
        self._ready: deque[T] = deque()
        self.held = 0  # claimed, not yet finished or released
        self.claiming = 0  # claims reserved and in flight
        self.finishing = 0  # handed to the finishing pool, not done
        self.claims = 0  # jobs claimed so far
        self._closed = False
        self._stop = stop or threading.Event()
        self.idle_since = clock()

    @property
    def closed(self) -> bool:
        """No more claims, no more hand-overs."""
        return self._closed or self._stop.is_set()

    # ---- the claiming side ------------------------------------------------------------------

    def room(self) -> int:
        """How many more claims may start now."""
        with self._cond:
            return self._room()

    def _room(self) -> int:
        if self.closed:
            return 0
        claims_left = math.inf if not self.max_jobs else self.max_jobs - self.claims
        return int(max(0, min(self.max_held - self.held - self.claiming, claims_left - self.claiming)))

    def wait_for_room(self, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.closed or self._room() > 0, timeout)
            return self._room()

    def reserve(self) -> bool:
        """Reserve a claim; False when there is no room or the gate is closed."""
        with self._cond:
            if self._room() <= 0:
                return False
            self.claiming += 1
            return True

    def unreserve(self) -> None:
        """The reserved claim did not take a job (or failed)."""
        with self._cond:
            self.claiming -= 1
            self._cond.notify_all()

    def claimed(self) -> bool:
        """The reserved claim took a job, now held. False: the gate closed meanwhile, and
        the caller gives the job back (and calls `done`)."""
        with self._cond:
            self.claiming -= 1
            self.claims += 1
            self.held += 1
            self._cond.notify_all()
            return not self.closed

    def hand_over(self, item: T) -> bool:
        """Pass a prepared job to the loop; False once the gate is closed."""
        with self._cond:
            if self.closed:
                return False
            self._ready.append(item)
            self._cond.notify_all()
            return True

    def wait_closed(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.closed, timeout)

    # ---- the loop's side --------------------------------------------------------------------

    def take(self) -> list[T]:
        """The jobs handed over since the last call."""
        with self._cond:
            items = list(self._ready)
            self._ready.clear()
            return items

    def wait_ready(self, timeout: float) -> None:
        """Until a job is handed over, the gate closes, or `timeout` passes."""
        with self._cond:
            self._cond.wait_for(lambda: self._ready or self.closed, timeout)

    def open(self) -> None:
        """The worker starts admitting work (its device proven, its engine loaded): the idle
        timer starts now, not when the gate was made."""
        with self._cond:
            self.idle_since = self.clock()

    def to_finishing(self, jobs: int = 1) -> None:
        """Held jobs go to the finishing pool: they free their slots (all at once, so the
        claiming side sees the room of a whole batch's jobs together), the worker stays busy."""
        with self._cond:
            self.held -= jobs
            self.finishing += jobs
            self.idle_since = self.clock()
            self._cond.notify_all()

    def finished(self) -> None:
        with self._cond:
            self.finishing -= 1
            self.idle_since = self.clock()
            self._cond.notify_all()

    def done(self) -> None:
        """A held job was let go of where it was (given back, failed before the loop)."""
        with self._cond:
            self.held -= 1
            self.idle_since = self.clock()
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        with self._cond:
            return bool(self.held or self.finishing or self.claiming)

    def idle_left(self) -> float:
        """Seconds until the idle exit if nothing arrives (infinite while busy)."""
        with self._cond:
            if self.held or self.finishing or self.claiming:
                return math.inf
            return self.idle_exit_seconds - (self.clock() - self.idle_since)

    def close_if_done(self) -> str | None:
        """Close the gate and say why when the worker should exit: it took its maximum
        number of jobs and all are done, or it has been idle for the idle period."""
        with self._cond:
            if self.held or self.finishing:
                self.idle_since = self.clock()
                return None
            if self.claiming:  # a claim in flight: not idle
                return None
            if self.max_jobs and self.claims >= self.max_jobs:
                self._closed = True
                return "max_jobs"
            if self.clock() - self.idle_since >= self.idle_exit_seconds:
                self._closed = True
                return "idle"
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
