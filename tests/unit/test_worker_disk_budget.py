"""The worker's disk budget (gpu_container/worker/disk.py) on a fake file system whose free
space is its size less what lies under the work folder and a fixed baseline (the image, the OS):
how many jobs it receives for, what it reserves, when it says never, and that a job's folder
going frees its bytes. No AWS, no model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from gpu_container.worker.disk import JOB_MARGIN_BYTES, DiskBudget, Fit, folder_bytes

MB = 1024 * 1024


class Usage(NamedTuple):
    total: int
    used: int
    free: int


class FakeDisk:
    """`total` bytes; used: `baseline` + the files under `folder` + `others` (another process)."""

    def __init__(self, folder: Path, total: int, baseline: int = 0) -> None:
        self.folder, self.total, self.baseline, self.others = folder, total, baseline, 0

    def __call__(self, _path: str) -> Usage:
        used = self.baseline + self.others + folder_bytes(self.folder)
        return Usage(self.total, used, max(0, self.total - used))


def sized(path: Path, size: int) -> None:
    """A file of `size` bytes (sparse: the budget counts sizes)."""
    with path.open("wb") as f:
        f.truncate(size)


def budget(tmp_path: Path, total: int, *, floor: int = 10 * MB, max_input: int = 100 * MB, baseline: int = 0):
    disk = FakeDisk(tmp_path, total, baseline)
    return DiskBudget(str(tmp_path), floor=floor, max_input_bytes=max_input, disk_usage=disk), disk


def test_it_receives_for_as_many_of_the_largest_jobs_as_fit(tmp_path: Path) -> None:
    b, _ = budget(tmp_path, total=1000 * MB, baseline=300 * MB)  # 690 MB for jobs after the floor
    assert b.capacity == 690 * MB
    assert b.jobs_that_fit() == 690 * MB // (100 * MB + JOB_MARGIN_BYTES) == 6


def test_a_reservation_counts_until_its_bytes_are_written_and_ends_when_its_folder_goes(tmp_path: Path) -> None:
    b, _ = budget(tmp_path, total=500 * MB)
    left = b.budget()
    fit, files = b.reserve(200 * MB)
    assert fit is Fit.RESERVED and files is not None and files.path.parent == tmp_path
    assert b.budget() == left - 200 * MB  # reserved, nothing written yet
    sized(files.path / "input", 50 * MB)
    assert b.budget() == left - 200 * MB  # written bytes count once: as used, no longer as reserved
    files.release()
    assert not files.path.exists() and b.held == [] and b.budget() == left


def test_a_job_larger_than_an_empty_worker_never_fits_and_one_larger_than_what_is_left_not_now(
    tmp_path: Path,
) -> None:
    b, disk = budget(tmp_path, total=300 * MB)  # capacity 290 MB
    assert b.reserve(291 * MB)[0] is Fit.NEVER
    fit, first = b.reserve(200 * MB)
    assert fit is Fit.RESERVED and first is not None
    assert b.reserve(100 * MB) == (Fit.NOT_NOW, None)
    assert b.jobs_that_fit() == 0  # blocked until one of its jobs' files are removed
    first.release()
    assert b.jobs_that_fit() == 2
    disk.others = 250 * MB  # something else fills the disk: no room, though nothing is held
    assert b.jobs_that_fit() == 0 and b.reserve(100 * MB)[0] is Fit.NOT_NOW
    assert b.jobs_that_fit() == 0  # not blocked (nothing held to wait for): the disk decides
    disk.others = 0
    assert b.jobs_that_fit() == 2


def test_a_volume_smaller_than_the_pools_largest_job_takes_one_job_at_a_time(tmp_path: Path) -> None:
    b, _ = budget(tmp_path, total=150 * MB, max_input=2000 * MB)  # capacity 140 MB < the 2 GB cap
    assert b.largest == b.capacity == 140 * MB
    assert b.jobs_that_fit() == 1
    fit, files = b.reserve(10 * MB)
    assert fit is Fit.RESERVED and files is not None
    assert b.jobs_that_fit() == 0  # an empty worker's whole budget is the largest job


def test_capacity_leaves_out_other_workers_job_folders_present_at_start(tmp_path: Path) -> None:
    """On a host with several workers on one volume, another's job files come and go: they are
    not part of the baseline an empty worker has."""
    sibling = tmp_path / "batchscribe-sibling"
    sibling.mkdir()
    sized(sibling / "input", 40 * MB)
    b, _ = budget(tmp_path, total=500 * MB, baseline=100 * MB)
    assert b.capacity == 500 * MB - 10 * MB - 100 * MB
    shutil.rmtree(sibling)
