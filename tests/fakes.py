"""Small stand-ins several test modules share: a clock the test moves and a window of 30 s."""

from __future__ import annotations

from dataclasses import dataclass


class Clock:
    """A clock the test moves by setting `now` (a callable like `time.time`)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Win:
    """The `index`th 30 s window of `job`: what the scheduler needs of a window."""

    job: str
    index: int

    @property
    def start(self) -> float:
        return self.index * 30.0

    @property
    def end(self) -> float:
        return (self.index + 1) * 30.0
