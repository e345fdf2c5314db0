"""The worker's disk budget: it holds only as many jobs as its free disk takes.

A held job's files are its input (downloaded, or fetched from its source URL) in a folder of
its own under the work folder, and nothing else: the decoder streams from the input, the log
and the outputs go to S3 from memory (tests/integration/test_worker_disk.py watches every file
a worker writes). A job's input size is in its record before anything is downloaded: the
upload's `input.size` (checked at intake), or, for a source URL, the most the fetch may take
(`declared_size`). So, with `free` the work folder's free bytes (shutil.disk_usage):

- a job needs its input size + `JOB_MARGIN_BYTES` (its folder, the file system's blocks);
- budget = free - `floor` (kept for the worker itself) - what held jobs reserved and have not
  written yet;
- an empty worker's budget, `capacity`, is fixed at start: the file system's size - floor -
  what was used then besides jobs' folders (the image, the OS: the same on every host of a pool);
- the worker receives messages only while its budget fits the largest job of its pool
  (`max_input_bytes`; or its capacity, when that is smaller), and no more messages than that
  many such jobs: every job it receives then fits, and none is turned away;
- before its claim, a job's record is read and its need reserved. A job that needs more than
  `capacity` can never run on this pool's workers: it fails `input_too_large_for_worker`
  (no worker loops on it). One that does not fit now (free space used by something else since)
  goes back unclaimed, visible at once, for a worker with room, and this worker receives no
  more until one of its jobs' files are removed;
- a job's reservation ends when its folder is removed (the job left the worker).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from batchscribe.models import Job

# A job's folder and its input's last block (4 KiB on ext4/xfs), with room to spare: what the
# worker writes besides the input is nothing (measured: test_worker_disk.py).
JOB_MARGIN_BYTES = 1024 * 1024
FOLDER_PREFIX = "batchscribe-"


class Usage(Protocol):
    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


DiskUsage = Callable[[str], Usage]


class Fit(Enum):
    RESERVED = "reserved"
    NOT_NOW = "not_now"  # more than the budget left now: another worker, or later
    NEVER = "never"  # more than an empty worker of this pool has


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (a job's folder: one file, or a few)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total


@dataclass(eq=False)
class JobFiles:
    """One job's folder and the bytes reserved for it; `release` removes both."""

    path: Path
    need: int
    budget: DiskBudget | None = None

    def written(self) -> int:
        return folder_bytes(self.path)

    def release(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self.budget is not None:
            self.budget.released(self)
            self.budget = None


@dataclass(eq=False)
class DiskBudget:
    folder: str
    floor: int
    max_input_bytes: int
    disk_usage: DiskUsage = shutil.disk_usage
    held: list[JobFiles] = field(default_factory=list)
    capacity: int = 0
    _blocked: bool = False  # a job did not fit: no receiving until one of ours is released
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        usage = self.disk_usage(self.folder)
        others = sum(folder_bytes(p) for p in Path(self.folder).glob(f"{FOLDER_PREFIX}*") if p.is_dir())
        baseline = usage.total - usage.free - others  # what is not a job's files
        self.capacity = max(0, usage.total - self.floor - baseline)

    @property
    def largest(self) -> int:
        """The most one job of this pool may need (as much as an empty worker has, at most)."""
        return min(self.max_input_bytes + JOB_MARGIN_BYTES, self.capacity)

    @staticmethod
    def need(job: Job) -> int:
        """Bytes a job's files take: its upload's size, or the most its source URL may fetch."""
        size = job.input.size if job.input.size is not None and job.input.source_url is None else None
        return (size if size is not None else job.input.declared_size) + JOB_MARGIN_BYTES

    def budget(self) -> int:
        """Free bytes, less the floor and what held jobs reserved and have not written yet."""
        with self._cond:
            held = list(self.held)
        outstanding = sum(max(0, f.need - f.written()) for f in held)
        return self.disk_usage(self.folder).free - self.floor - outstanding

    def jobs_that_fit(self) -> int:
        """How many more jobs of the pool's largest size the worker can take now (0: receive
        nothing)."""
        with self._cond:
            if self._blocked:
                return 0
        largest = self.largest
        left = self.budget()
        if largest <= 0 or left < largest:
            return 0
        return max(1, math.floor(left / (self.max_input_bytes + JOB_MARGIN_BYTES)))

    def reserve(self, need: int) -> tuple[Fit, JobFiles | None]:
        """Reserve `need` bytes in a new job folder, or say why not."""
        if need > self.capacity:
            return Fit.NEVER, None
        with self._cond:
            if need > self.budget():
                self._blocked = bool(self.held)  # an empty worker has its whole budget already
                return Fit.NOT_NOW, None
            files = JobFiles(Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=self.folder)), need, self)
            self.held.append(files)
            return Fit.RESERVED, files

    def released(self, files: JobFiles) -> None:
        with self._cond:
            if files in self.held:
                self.held.remove(files)
            self._blocked = False
            self._cond.notify_all()

    def wait_for_release(self, timeout: float) -> None:
        """Until a job's files are removed, or `timeout` seconds (free space can grow otherwise)."""
        with self._cond:
            self._cond.wait(timeout)
