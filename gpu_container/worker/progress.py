"""A job's progress as its heartbeat writes it, in steps finer than its batches.

The loop learns a job's source seconds done when a batch ends (on a CPU a batch of a long file
can take half a minute: 5 % of a 20-minute file); between two batches the heartbeat moves the
figure on at the pace this worker has been going (source seconds per wall-clock second, measured
from batch to batch, kept across jobs so that a job's first batch moves too), never further than
one more batch would take it, never back, and at most 99 % until the commit writes 100."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batchscribe.whisper_models import WINDOW_SECONDS

SMOOTHING = 0.5  # weight of the newest measured pace against the ones before
FIRST_STEP_SECONDS = WINDOW_SECONDS  # how far ahead of what is done a job's first batch may be shown (a window)


@dataclass
class Speed:
    """The worker's pace (source seconds a wall-clock second), shared by the jobs it holds."""

    per_second: float | None = None

    def measured(self, pace: float) -> None:
        old = self.per_second
        self.per_second = pace if old is None else SMOOTHING * pace + (1 - SMOOTHING) * old


@dataclass
class Pace:
    """One job's progress: exact at each batch's end, moved on between batches."""

    speed: Speed = field(default_factory=Speed)
    clock: Callable[[], float] = time.monotonic
    _done: float = 0.0
    _total: float = 0.0
    _at: float | None = None  # when `_done` was learned
    _step: float = FIRST_STEP_SECONDS
    _shown: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self, done: float, total: float) -> None:
        """The loop's figure after a batch: `done` of `total` source seconds are transcribed.
        The pace is measured between two batch ends where this job's figure grew."""
        now = self.clock()
        with self._lock:
            self._total = total
            if self._at is None:
                self._done, self._at = done, now
                return
            if done <= self._done:
                return
            if now > self._at:
                self.speed.measured((done - self._done) / (now - self._at))
            self._step = done - self._done
            self._done, self._at = done, now

    def percent(self) -> int:
        """What the heartbeat writes now (0-99)."""
        with self._lock:
            if self._total <= 0:
                return self._shown
            seconds = self._done
            if self._at is not None and self.speed.per_second:
                seconds += min(self.speed.per_second * (self.clock() - self._at), self._step)
            self._shown = max(self._shown, int(min(99.0, 100 * seconds / self._total)))
            return self._shown
