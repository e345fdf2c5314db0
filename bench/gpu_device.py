"""What the GPU benchmark ran on, recorded before anything is timed: the card, its driver and
compute capability (nvidia-smi and torch), the CUDA torch was built with, the libraries'
versions, and a first CTranslate2 kernel on the device (CTranslate2 4.8.5 has no SASS for
sm_90: on an H100 that first kernel is JIT-compiled from its sm_86 PTX, which needs a driver
of 570 or later; its time is recorded, and a failure stops the benchmark with the cause)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import threading
import time
from typing import Any

import numpy as np

QUERY = "name,driver_version,compute_cap,memory.total"
PACKAGES = ("torch", "ctranslate2", "faster-whisper", "openai-whisper", "av", "numpy", "pydantic")


def nvidia_smi() -> list[dict[str, str]]:
    """One row per GPU from nvidia-smi (none where it is absent or fails)."""
    if not shutil.which("nvidia-smi"):
        return []
    proc = subprocess.run(
        ["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return []
    keys = QUERY.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=False)) for line in proc.stdout.splitlines()]


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def torch_cuda() -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "built_with_cuda": torch.version.cuda}
    major, minor = torch.cuda.get_device_capability(0)
    free, total = torch.cuda.mem_get_info(0)
    return {
        "available": True,
        "built_with_cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "memory_gib": round(total / 2**30, 1),
        "free_gib": round(free / 2**30, 1),
    }


def ct2_kernel(device: str) -> dict[str, Any]:
    """CTranslate2's device count, compute types, and one kernel (a cast there and back) timed."""
    import ctranslate2

    out: dict[str, Any] = {"cuda_devices": ctranslate2.get_cuda_device_count()}
    if device != "cuda":
        return out
    out["compute_types"] = sorted(ctranslate2.get_supported_compute_types("cuda"))
    started = time.perf_counter()
    x = ctranslate2.StorageView.from_array(np.ones((256, 256), np.float32)).to_device(ctranslate2.Device.cuda)
    y = x.to(ctranslate2.DataType.float16).to(ctranslate2.DataType.float32).to_device(ctranslate2.Device.cpu)
    if float(np.array(y).sum()) != 256 * 256:
        raise RuntimeError("CTranslate2's first kernel on the GPU computed a wrong result")
    out["first_kernel_s"] = round(time.perf_counter() - started, 2)
    return out


def facts(device: str) -> dict[str, Any]:
    """Everything above, with the JIT cache CUDA was told to use."""
    smi = nvidia_smi()
    card = smi[0] if smi else {}
    return {
        "device": device,
        "gpu": card.get("name"),
        "driver": card.get("driver_version"),
        "compute_capability": card.get("compute_cap"),
        "nvidia_smi": smi,
        "torch_cuda": torch_cuda(),
        "ctranslate2": ct2_kernel(device),
        "versions": versions(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cuda_cache_path": os.environ.get("CUDA_CACHE_PATH"),
    }


class UsedPeak:
    """The most GPU memory in use during a block, by every allocator of the process (CTranslate2's
    as well as torch's): the driver's figure sampled on a thread every `interval` s. 0 without CUDA."""

    def __init__(self, device: str, interval: float = 0.02) -> None:
        self.device = device
        self.interval = interval
        self.bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import torch

        while True:
            free, total = torch.cuda.mem_get_info()
            self.bytes = max(self.bytes, total - free)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> UsedPeak:
        if self.device == "cuda":
            self._thread = threading.Thread(target=self._sample, name="gpu-memory", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def gib(self) -> float:
        return round(self.bytes / 2**30, 2)
