"""A batch that runs out of GPU memory (injected: a stand-in runner raises the libraries' own
out-of-memory errors above a batch size): B halves and stays halved, the same windows run again
at the new size and every job completes, one log line and one metric say so, and no window is
re-run alone; one window alone out of memory fails its job through the usual error path."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch

from batchscribe.settings import BATCH_OUT_OF_MEMORY_METRIC, METRICS_NAMESPACE
from gpu_container.worker import batches as batches_module
from gpu_container.worker.batched import DecodeOptions, run_isolating
from gpu_container.worker.batches import Batches, EngineKey
from gpu_container.worker.gpu_memory import MemoryInfo, MiB
from gpu_container.worker.scheduler import JobFailed, JobFinished, Work
from tests.fakes import Win

KEY: EngineKey = ("faster-whisper", "large-v3-turbo")
CT2_OOM = "CUDA failed with error out of memory"  # CTranslate2's CUDA_CHECK on cudaErrorMemoryAllocation


class Card:
    """A runner on a card that holds `fits` windows at once: a larger batch raises `error`."""

    name, model_name, device = "fake", "large-v3-turbo", "cuda"

    def __init__(self, fits: int, error: type[Exception] = RuntimeError, poison: str | None = None) -> None:
        self.fits, self.error, self.poison = fits, error, poison
        self.calls: list[int] = []

    def run(self, batch: Sequence[Work[Win]]) -> list[tuple[str, int]]:
        self.calls.append(len(batch))
        if len(batch) > self.fits:
            raise self.error(CT2_OOM if self.error is RuntimeError else "CUDA out of memory. Tried to allocate 2 GiB")
        if any(w.window.job == self.poison for w in batch):
            raise RuntimeError("this window cannot be decoded")
        return [(w.window.job, w.window.index) for w in batch]


def works(n: int, job: str = "a") -> list[Work[Win]]:
    return [Work(job, i, Win(job, i), None, None) for i in range(n)]


def test_a_batch_out_of_memory_runs_again_halved_in_order() -> None:
    card, sizes = Card(fits=20), []

    def on_oom(failed: int, error: BaseException) -> int:
        sizes.append(failed)
        return failed // 2

    results = run_isolating(card, works(64), limit=64, on_oom=on_oom)  # type: ignore[arg-type]
    assert results == [("a", i) for i in range(64)]
    assert sizes == [64, 32]  # 64 and 32 ran out; 16 fit
    assert card.calls == [64, 32, 16, 16, 16, 16]  # never window by window


def test_torchs_out_of_memory_error_takes_the_same_path() -> None:
    card = Card(fits=3, error=torch.cuda.OutOfMemoryError)
    results = run_isolating(card, works(8))  # type: ignore[arg-type]
    assert results == [("a", i) for i in range(8)] and card.calls == [8, 4, 2, 2, 2, 2]


def test_any_other_error_still_isolates_the_window_that_fails() -> None:
    card = Card(fits=64, poison="bad")
    batch = works(2, "a") + works(1, "bad") + works(2, "c")
    results = run_isolating(card, batch)  # type: ignore[arg-type]
    assert [r for r in results if isinstance(r, Exception)] == [results[2]]
    assert "cannot be decoded" in str(results[2]) and card.calls == [5, 1, 1, 1, 1, 1]


class Stream:
    """A job's windows, ready at once (what windows.MediaStream gives the scheduler)."""

    def __init__(self, job: str, n: int) -> None:
        self.job, self.n, self.duration = job, n, n * 30.0

    def windows(self) -> Iterator[Win]:
        return (Win(self.job, i) for i in range(self.n))


def run_until_done(batches: Batches, jobs: int) -> list[Any]:
    events: list[Any] = []
    for _ in range(1000):
        events += batches.step().events
        if len(events) == jobs:
            return events
    raise AssertionError(f"{len(events)} of {jobs} jobs ended")


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)  # no decoding thread


def test_the_worker_halves_b_keeps_it_and_says_so_once_each_time(
    held: None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    card = Card(fits=20)
    free = MemoryInfo(free=900 * MiB, total=15_360 * MiB, source="cuda-driver")
    batches = Batches(lambda _key: card, batch_size=64, read_ahead=64, memory_probe=lambda: free)  # type: ignore[arg-type,return-value]
    for job in ("a", "b", "c"):
        batches.add(job, KEY, Stream(job, 40), DecodeOptions())  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING):
        events = run_until_done(batches, jobs=3)

    assert all(isinstance(e, JobFinished) for e in events)
    assert {e.job: e.results for e in events} == {j: [(j, i) for i in range(40)] for j in ("a", "b", "c")}
    assert batches.size(KEY) == 16 and batches.size(("faster-whisper", "small")) == 64  # per engine
    assert card.calls[:6] == [64, 32, 16, 16, 16, 16]  # the first batch, completed at the new size
    assert max(card.calls[6:]) == 16 and 1 not in card.calls  # kept; never window by window
    lines = [r for r in caplog.records if "out of GPU memory" in r.getMessage()]
    assert [tuple(vars(r)[k] for k in ("batch_size_was", "batch_size", "free_gpu_bytes")) for r in lines] == [
        (64, 32, free.free),
        (32, 16, free.free),
    ]
    assert all(r.levelname == "WARNING" and CT2_OOM in vars(r)["error"] for r in lines)
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m[BATCH_OUT_OF_MEMORY_METRIC] for m in metrics] == [[1.0], [1.0]]
    assert {m["_aws"]["CloudWatchMetrics"][0]["Namespace"] for m in metrics} == {METRICS_NAMESPACE}
    assert {m["service"] for m in metrics} == {"worker"}


def test_one_window_out_of_memory_fails_its_job_and_only_its_job(
    held: None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """At B = 1 an out-of-memory is that window's failure: its job fails with the error (the
    worker's finisher classifies it, transient), the other jobs finish, nothing loops."""

    class Greedy(Card):
        def run(self, batch: Sequence[Work[Win]]) -> list[tuple[str, int]]:
            if any(w.window.job == "huge" for w in batch):
                self.calls.append(len(batch))
                raise RuntimeError(CT2_OOM)
            return super().run(batch)

    card = Greedy(fits=64)
    batches = Batches(lambda _key: card, batch_size=4, read_ahead=4, memory_probe=lambda: None)  # type: ignore[arg-type,return-value]
    for job, n in (("a", 3), ("huge", 1), ("c", 3)):
        batches.add(job, KEY, Stream(job, n), DecodeOptions())  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING):
        events = {e.job: e for e in run_until_done(batches, jobs=3)}

    assert isinstance(events["huge"], JobFailed) and str(events["huge"].error) == CT2_OOM
    assert isinstance(events["a"], JobFinished) and isinstance(events["c"], JobFinished)
    assert batches.size(KEY) == 1
    messages = [r.getMessage() for r in caplog.records if "out of GPU memory" in r.getMessage()]
    assert messages == [
        "out of GPU memory: batch size halved",
        "out of GPU memory: batch size halved",
        "out of GPU memory on one window: it fails",
    ]
    assert sum('"_aws"' in line for line in capsys.readouterr().out.splitlines()) == 3
