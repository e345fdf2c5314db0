"""Batch log-mel (gpu_container/worker/features.py, whisper_lib's steps) and its one-slot prefetch.

What is proven:
- one vectorized call gives, for every window of a batch, the features faster-whisper's own
  extractor gives window by window (numpy, and torch as it runs on a GPU), for 30 s windows,
  short ones, a continuation's rest and a near-silent one, at 80 and 128 mel bands;
- openai-whisper's batched log_mels equal whisper's log_mel_spectrogram window by window;
- the prefetch computes the next batch on its own thread and gives each window its own rows,
  whatever chunk, top-up or continuation the runner is handed;
- the worker's batches prepare batch n+1 before running batch n, and every window still gets
  exactly one result (also when a job is let go while its windows wait in the prepared batch).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from faster_whisper.audio import pad_or_trim
from faster_whisper.feature_extractor import FeatureExtractor

from gpu_container.worker import batches as batches_module
from gpu_container.worker import features
from gpu_container.worker.batches import Batches
from gpu_container.worker.scheduler import JobFinished, Work
from gpu_container.worker.whisper_lib import OpenAIWhisperSteps
from tests.fakes import Win

SR = 16_000
LENGTHS = [30 * SR, 7 * SR + 37, 29 * SR, SR // 3, 30 * SR, 12 * SR + 159]


def speechy(n: int, seed: int) -> np.ndarray:
    """Noise under a slow envelope: loud and quiet stretches, so each window's clamp differs."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (rng.standard_normal(n) * 0.2 * np.sin(t / (2000 + 300 * seed)) ** 2).astype(np.float32)


def audios() -> list[np.ndarray]:
    out = [speechy(n, i) for i, n in enumerate(LENGTHS)]
    out[3] *= 1e-6  # near silence: the clamp sits at the floor
    return out


def per_window(fe: FeatureExtractor, batch: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([pad_or_trim(fe(a)[..., :-1]) for a in batch])


@pytest.mark.parametrize("n_mels", [80, 128])
def test_one_numpy_call_equals_the_extractor_window_by_window(n_mels: int) -> None:
    fe = FeatureExtractor(n_mels)
    batch = [*audios(), audios()[0][13 * SR + 77 :]]  # and a continuation's rest
    got = features.log_mel_batch(batch, features.MelSpec(fe.mel_filters))
    want = per_window(fe, batch)
    assert got.shape == want.shape == (len(batch), n_mels, 3000) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_torch_path_a_gpu_takes_equals_it_too() -> None:
    fe = FeatureExtractor(80)
    got = features._torch_batch(audios(), features.MelSpec(fe.mel_filters, "cpu"))
    np.testing.assert_allclose(got, per_window(fe, audios()), atol=1e-4)


def test_a_cpu_device_never_takes_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features, "_torch_batch", lambda *_: pytest.fail("torch on a CPU worker"))
    fe = FeatureExtractor(80)
    assert features.log_mel_batch(audios()[:2], features.MelSpec(fe.mel_filters, "cpu")).shape == (2, 80, 3000)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_openai_whispers_batched_log_mels_equal_its_own_window_by_window(
    n_mels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = SimpleNamespace(device=torch.device("cpu"), dims=SimpleNamespace(n_mels=n_mels), is_multilingual=False)
    steps = OpenAIWhisperSteps(model, fp16=False)
    monkeypatch.setattr("gpu_container.worker.whisper_lib.MEL_CHUNK_ROWS", 4)  # chunks too
    mels, frames = steps.log_mels(audios())
    want, want_frames = steps.log_mels_per_window(audios())
    assert frames == want_frames and mels.shape == want.shape
    torch.testing.assert_close(mels, want, atol=1e-4, rtol=0)


# ---- the prefetch ---------------------------------------------------------------------------------


class Counting:
    def __init__(self) -> None:
        self.threads: list[str] = []
        self.rows: list[int] = []
        self.fe = FeatureExtractor(80)

    def __call__(self, batch: Sequence[np.ndarray]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        self.rows.append(len(batch))
        return features.log_mel_batch(batch, features.MelSpec(self.fe.mel_filters))


def test_prepared_rows_come_from_the_other_thread_and_each_window_gets_its_own() -> None:
    compute = Counting()
    prefetch = features.FeaturePrefetch(compute)
    batch = audios()
    prefetch.prepare(batch)
    # the runner is handed a chunk out of order, one new window, and a continuation's rest
    handed = [batch[4], batch[0], speechy(5 * SR, 9), batch[2][3 * SR :]]
    got = prefetch.take(handed)
    np.testing.assert_allclose(got, per_window(compute.fe, handed), atol=1e-5)
    assert compute.threads[0].startswith("features") and compute.threads[1] == threading.current_thread().name
    assert compute.rows == [len(batch), 2]  # the two unprepared windows computed together, once
    assert (prefetch.ready_rows, prefetch.computed_rows) == (2, 2)
    prefetch.close()


def test_a_batch_not_prepared_is_computed_on_the_spot() -> None:
    compute = Counting()
    prefetch = features.FeaturePrefetch(compute)
    other = audios()[:2]
    got = prefetch.take(other)
    np.testing.assert_allclose(got, per_window(compute.fe, other), atol=1e-5)
    assert (prefetch.ready_rows, prefetch.computed_rows) == (0, 2)
    prefetch.close()


# ---- the worker's batches prepare the next batch ----------------------------------------------------


class Stream:
    def __init__(self, job: str, n: int) -> None:
        self.job, self.n, self.duration = job, n, n * 30.0

    def windows(self) -> Iterator[Win]:
        return (Win(self.job, i) for i in range(self.n))


class Preparing:
    """A runner with `prepare`: records what it was asked to prepare and what it ran."""

    name, model_name, device = "fake", "tiny.en", "cuda"

    def __init__(self) -> None:
        self.log: list[tuple[str, list[tuple[str, int]]]] = []

    def prepare(self, batch: Sequence[Work[Win]]) -> None:
        self.log.append(("prepare", [(w.job, w.window.index) for w in batch]))

    def run(self, batch: Sequence[Work[Win]]) -> list[tuple[str, int]]:
        ids = [(w.job, w.window.index) for w in batch]
        self.log.append(("run", ids))
        return ids


def test_batch_n_plus_one_is_prepared_before_batch_n_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)  # no decoding thread
    runner = Preparing()
    batches = Batches(lambda _key: runner, batch_size=4, read_ahead=8)  # type: ignore[arg-type,return-value]
    batches.add("a", ("fake", "tiny.en"), Stream("a", 10), None)  # type: ignore[arg-type]
    events: list[Any] = []
    while len(events) < 1:
        events += batches.step().events
    kinds = [k for k, _ in runner.log]
    assert kinds[:3] == ["prepare", "run", "prepare"]  # batch 2 prepared before batch 1 ran
    runs = [ids for k, ids in runner.log if k == "run"]
    prepared = [ids for k, ids in runner.log if k == "prepare"]
    assert runs[1:] == prepared[: len(runs) - 1]  # each batch after the first is the one prepared
    assert [r for r in events[0].results] == [("a", i) for i in range(10)]  # every window once, in order


def test_a_job_let_go_while_its_windows_wait_prepared_is_dropped_and_the_rest_finish(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batches_module, "prefetch", lambda windows, _depth=2: windows)
    runner = Preparing()
    batches = Batches(lambda _key: runner, batch_size=4, read_ahead=8)  # type: ignore[arg-type,return-value]
    batches.add("a", ("fake", "tiny.en"), Stream("a", 6), None)  # type: ignore[arg-type]
    batches.add("b", ("fake", "tiny.en"), Stream("b", 6), None)  # type: ignore[arg-type]
    batches.step()
    batches.remove("b")  # cancelled: some of its windows sit in the prepared batch
    events: list[Any] = []
    for _ in range(50):
        events += batches.step().events
        if events:
            break
    assert [type(e) for e in events] == [JobFinished] and events[0].job == "a"
    assert events[0].results == [("a", i) for i in range(6)]
    later_runs = [ids for k, ids in runner.log if k == "run"][1:]
    assert all(job == "a" for ids in later_runs for job, _ in ids)  # b's windows never ran after it left
