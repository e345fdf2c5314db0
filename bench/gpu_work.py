"""The GPU benchmark's work, prepared before any clock starts, and how it is timed.

- Audio: the bundled sample's speech tiled to a job's length, decoded and cut into windows by
  the worker's own streaming decode + VAD (windows.open_media), once per length, outside the
  timed loops (that time is reported on its own).
- A mix: jobs of one length, enough of them to fill every batch of the size measured.
- `Replay`: a held job's stream that yields those windows again, for `Batches`, and says when
  its prefetch thread has buffered them (the timer starts only once every job is ready).
- `Counter`: wraps a runner's library step (CTranslate2's generate, whisper's decode) and its
  `run`, counting the tokens actually decoded and the size of each batch that ran (CTranslate2's
  `Whisper.generate` decodes about half of `max_length`: the tokens asked for are not the
  tokens decoded).
"""

from __future__ import annotations

import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker.batched import DecodeOptions
from gpu_container.worker.media import decode
from gpu_container.worker.windows import Window, open_media

PRIMED_TIMEOUT_S = 60.0


def write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return path


def speech(source: Path, seconds: float, folder: Path) -> Path:
    """A WAV of `seconds` of the source's speech, repeated."""
    audio = decode(source, 24 * 3600).samples
    repeats = int(np.ceil(seconds * SAMPLE_RATE / len(audio)))
    return write_wav(folder / f"speech-{seconds:g}s.wav", np.tile(audio, repeats)[: int(seconds * SAMPLE_RATE)])


def cut(path: Path) -> tuple[list[Window], float]:
    """A file's windows through the worker's decode and VAD, and the seconds that took."""
    started = time.perf_counter()
    with open_media(path, 24 * 3600) as stream:
        windows = list(stream.windows())
    return windows, time.perf_counter() - started


@dataclass
class Mix:
    """`jobs` jobs of one file's windows."""

    name: str
    jobs: int
    seconds: float  # each job's source length
    windows: list[Window] = field(default_factory=list)

    @property
    def total_windows(self) -> int:
        return self.jobs * len(self.windows)


def mixes_for(batch: int, short_s: float, long_s: float, files: dict[float, list[Window]]) -> list[Mix]:
    """Two mixes that fill every batch of `batch` windows: short jobs (one window each, two
    batches' worth) and long jobs (a batch's worth of jobs, each several windows long)."""
    return [
        Mix(f"short ({short_s:g} s jobs)", 2 * batch, short_s, files[short_s]),
        Mix(f"long ({long_s:g} s jobs)", batch, long_s, files[long_s]),
    ]


class Replay:
    """A held job's stream over windows decoded beforehand (what Batches needs of a
    MediaStream: `windows()` and `duration`)."""

    def __init__(self, windows: list[Window], duration: float, ready_after: int = 2) -> None:
        self._windows = windows
        self.duration = duration
        self.decoded_seconds = duration
        self.total_seconds = duration
        self._ready_after = min(ready_after, len(windows))  # the prefetch queue's depth
        self.primed = threading.Event()

    def windows(self) -> Iterator[Window]:
        for i, window in enumerate(self._windows):
            if i >= self._ready_after:  # the prefetch thread asks for one more: its queue is full
                self.primed.set()
            yield window
        self.primed.set()


def wait_primed(streams: list[Replay]) -> None:
    deadline = time.monotonic() + PRIMED_TIMEOUT_S
    for stream in streams:
        if not stream.primed.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("a held job's windows were not buffered in time")


@dataclass
class Item:
    """One window and its job's options, as the scheduler hands a runner (scheduler.Work)."""

    window: Window
    options: Any = field(default_factory=lambda: DecodeOptions(language="en"))


class Counter:
    """Counts what a runner really did: tokens decoded per window and the batch sizes run."""

    def __init__(self, runner: Any) -> None:
        self.tokens: list[int] = []
        self.batches: list[int] = []
        steps = runner.steps
        name = "generate" if hasattr(steps, "generate") else "decode"
        setattr(steps, name, self._counting(getattr(steps, name)))
        setattr(runner, "run", self._sizes(runner.run))  # noqa: B010 (an instance's bound method)

    def _counting(self, inner: Any) -> Any:
        def counting(*args: Any, **kwargs: Any) -> Any:
            out = inner(*args, **kwargs)
            self.tokens.extend(len(decoded.tokens) for decoded in out)
            return out

        return counting

    def _sizes(self, inner: Any) -> Any:
        def run(batch: Any) -> Any:
            self.batches.append(len(batch))
            return inner(batch)

        return run

    def reset(self) -> None:
        self.tokens.clear()
        self.batches.clear()

    @property
    def tokens_mean(self) -> float | None:
        return round(float(np.mean(self.tokens)), 1) if self.tokens else None
