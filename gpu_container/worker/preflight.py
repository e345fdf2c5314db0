"""The GPU preflight: before its first claim, a worker set to run on cuda proves its device.

In order, each step naming what failed (`PreflightFailed.check`) and what to do about it:
1. `driver`: the NVIDIA driver is there (libcuda.so.1 loads, `cuInit` succeeds) and the CUDA
   version it supports (`cuDriverGetVersion`; its version string from NVML when present);
2. `device`: a device is visible, its name and compute capability (`cuDeviceGetAttribute`);
3. `engine build`: what the engine library's build needs (`ENGINE_BUILDS`, below) against that
   driver and device: machine code (SASS) for the device, or PTX the driver can compile for it;
4. `engine`: the engine library itself sees the device, with the compute type asked for;
5. `kernel`: a tiny kernel runs (CTranslate2: a StorageView copied to the GPU and converted
   there; PyTorch: a small product), so a driver that cannot compile the PTX fails here, not
   in a job.

Everything that touches the GPU is behind `Probe`: `CudaProbe` is the real one (libcuda and
NVML through ctypes, the engine library through whisper_lib); tests hand in a fake with the
driver and device of their case. `choose_device` is what a worker's `device` setting becomes:
`cpu`; `cuda` (the preflight must pass: a GPU pool never falls back to CPU); `auto` (cuda when
the preflight passes, else cpu, with the reason)."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from batchscribe.resources import CUDA_CACHE_PATH_ENV
from gpu_container.worker import whisper_lib

Version = tuple[int, int]
Code = Literal["sass", "ptx"]
T = TypeVar("T")

# ---- what an engine build needs ------------------------------------------------------------

# The first NVIDIA driver branch of each CUDA version (NVIDIA's CUDA Toolkit release notes,
# "CUDA Toolkit and Corresponding Driver Versions"). A driver runs code built with CUDA X.y from
# X.0's branch on (minor version compatibility), but compiles PTX only up to its own version.
DRIVER_BRANCHES: dict[Version, int] = {
    (11, 8): 520,
    (12, 0): 525,
    (12, 1): 530,
    (12, 2): 535,
    (12, 3): 545,
    (12, 4): 550,
    (12, 5): 555,
    (12, 6): 560,
    (12, 8): 570,
    (12, 9): 575,
    (13, 0): 580,
}


@dataclass(frozen=True)
class EngineBuild:
    """What an engine library's GPU code needs of the driver and the device."""

    name: str  # e.g. "CTranslate2 4.8.5"
    cuda: Version  # the CUDA toolkit it was built with (its PTX's, too)
    sass: tuple[Version, ...]  # compute capabilities it carries machine code for
    ptx: tuple[Version, ...]  # ... and PTX for, which the driver compiles for newer devices
    libraries: tuple[str, ...] = ()  # CUDA userland libraries it loads at run time

    def code_for(self, capability: Version) -> Code | None:
        """`sass`: machine code the device runs (built for its major, at most its minor); `ptx`:
        only PTX for an older architecture, which the driver must compile; None: neither."""
        if any(major == capability[0] and minor <= capability[1] for major, minor in self.sass):
            return "sass"
        if any(arch <= capability for arch in self.ptx):
            return "ptx"
        return None

    @property
    def archs(self) -> str:
        return ", ".join(f"sm_{a}{b}" for a, b in self.sass)


# The engine builds this worker knows, by (library, version): the one table of what they need.
# Source: the wheel itself (NOTES.md "More GPU facts"; tests/unit/test_preflight.py reads the
# installed wheel's fatbinary and holds this entry to it): libctranslate2.so 4.8.5 carries SASS for
# sm_53, 60, 61, 70, 75, 80, 86 and PTX for sm_86, built with CUDA 12.8 (PTX ISA 8.7); it loads
# libcublas.so.12. So T4 (sm_75), A10G (sm_86), L4 and L40S (sm_89) run its own code; an H100
# (sm_90) only the PTX, compiled by the driver: driver 570 or later, which knows CUDA 12.8.
ENGINE_BUILDS: dict[tuple[str, str], EngineBuild] = {
    ("ctranslate2", "4.8.5"): EngineBuild(
        "CTranslate2 4.8.5",
        cuda=(12, 8),
        sass=((5, 3), (6, 0), (6, 1), (7, 0), (7, 5), (8, 0), (8, 6)),
        ptx=((8, 6),),
        libraries=("libcublas.so.12",),
    ),
}


def torch_build(version: str, cuda: str | None, arch_list: list[str]) -> EngineBuild:
    """A PyTorch build from what it reports (`torch.version.cuda`, `torch.cuda.get_arch_list()`,
    entries like `sm_90` for machine code and `compute_90` for PTX)."""
    if not cuda:
        raise PreflightFailed(
            "engine build",
            f"this image's PyTorch {version} is a CPU build (no CUDA)",
            "build the GPU image (DEVICE=gpu), whose PyTorch comes from the CUDA index",
        )

    def archs(prefix: str) -> tuple[Version, ...]:
        found = [a.removeprefix(prefix) for a in arch_list if a.startswith(prefix)]
        return tuple(sorted((int(a[:-1]), int(a[-1])) for a in found if a.isdigit()))

    major, minor = (int(x) for x in cuda.split(".")[:2])
    return EngineBuild(f"PyTorch {version}", cuda=(major, minor), sass=archs("sm_"), ptx=archs("compute_"))


# ---- what the preflight finds ---------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    cuda: Version  # the CUDA version it supports (cuDriverGetVersion)
    version: str | None = None  # e.g. "570.133.20" (NVML), when NVML is there

    @property
    def label(self) -> str:
        return f"{self.version or 'driver'} (CUDA {_v(self.cuda)})"


@dataclass(frozen=True)
class Device:
    name: str
    capability: Version
    memory_bytes: int = 0
    count: int = 1  # devices visible; the worker uses the first

    @property
    def label(self) -> str:
        return f"{self.name} (sm_{self.capability[0]}{self.capability[1]})"


class PreflightFailed(Exception):
    """One check failed: `cause` says what was found, `action` what to do."""

    def __init__(self, check: str, cause: str, action: str) -> None:
        super().__init__(f"{check}: {cause}")
        self.check, self.cause, self.action = check, cause, action


@dataclass(frozen=True)
class Passed:
    driver: Driver
    device: Device
    build: EngineBuild
    code: Code
    compute_type: str
    kernel_seconds: float

    def fields(self) -> dict[str, Any]:
        """What the worker logs of it."""
        return {
            "driver": self.driver.label,
            "gpu": self.device.label,
            "gpus_visible": self.device.count,
            "gpu_memory_mib": self.device.memory_bytes // 2**20,
            "engine_build": self.build.name,
            "gpu_code": "machine code" if self.code == "sass" else "PTX compiled by the driver",
            "compute_type": self.compute_type,
            "kernel_seconds": round(self.kernel_seconds, 3),
        }


class Probe(Protocol):
    """Everything the preflight asks of the machine (raising PreflightFailed, or anything)."""

    def driver(self) -> Driver: ...
    def device(self) -> Device: ...
    def build(self) -> EngineBuild: ...
    def engine(self, compute_type: str) -> str: ...  # the compute type the engine will use
    def kernel(self) -> float: ...  # seconds the tiny kernel took


# ---- the checks ------------------------------------------------------------------------------

ACTIONS = {
    "driver": "run GPU workers on an AMI with a current NVIDIA driver (the ECS GPU-optimized AMI "
    "of Amazon Linux 2023) and a job definition that asks for a GPU; on a machine without one, set device=cpu",
    "device": "give the job a GPU (the job definition's GPU requirement; locally, check nvidia-smi "
    "and CUDA_VISIBLE_DEVICES), or run this pool with device=cpu",
    "engine": "use the GPU image (DEVICE=gpu) whose CUDA 12 libraries the engine loads",
    "kernel": "the GPU cannot run the engine's code: check the host's driver (nvidia-smi) and its "
    "kernel log for Xid errors; replace the host",
}


def check_build(build: EngineBuild, driver: Driver, device: Device) -> Code:
    """Whether the build's code runs on this driver and device, or why not."""
    userland = (build.cuda[0], 0)
    if driver.cuda < userland:
        raise PreflightFailed(
            "driver",
            f"{build.name} is built with CUDA {_v(build.cuda)} and needs a driver for CUDA {_v(userland)} or "
            f"later ({_branch(userland)}); this host has {driver.label}",
            ACTIONS["driver"],
        )
    code = build.code_for(device.capability)
    if code is None:
        raise PreflightFailed(
            "device",
            f"{build.name} carries no code that runs on {device.label}: machine code for {build.archs}, "
            f"PTX for {', '.join(f'sm_{a}{b}' for a, b in build.ptx) or 'none'}",
            "run this pool on a GPU type the engine build supports (T4, A10G, L4, L40S, H100)",
        )
    if code == "ptx" and driver.cuda < build.cuda:
        raise PreflightFailed(
            "driver",
            f"{build.name} carries no machine code for {device.label}, only PTX that the driver must compile; "
            f"that PTX is from CUDA {_v(build.cuda)}, which needs driver {_branch(build.cuda)}; this host has "
            f"{driver.label}",
            f"use an AMI whose NVIDIA driver is {_branch(build.cuda)} (the current ECS GPU-optimized AMI), or a GPU "
            f"type the build has machine code for ({build.archs})",
        )
    return code


def preflight(compute_type: str, probe: Probe, clock: Callable[[], float] = time.monotonic) -> Passed:
    """Every check in order; the first that fails raises PreflightFailed."""
    driver = _step("driver", probe.driver)
    device = _step("device", probe.device)
    build = _step("engine", probe.build)
    code = check_build(build, driver, device)
    used = _step("engine", lambda: probe.engine(compute_type))
    seconds = _step("kernel", probe.kernel)
    return Passed(driver, device, build, code, used, seconds)


def _step(check: str, step: Callable[[], T]) -> T:
    try:
        return step()
    except PreflightFailed:
        raise
    except Exception as exc:  # whatever a library raised: named, with the step's advice
        raise PreflightFailed(check, f"{type(exc).__name__}: {exc}", ACTIONS[check]) from exc


@dataclass(frozen=True)
class DeviceChoice:
    """What a `device` setting became: the device, why, and the preflight's verdict (`passed`
    when it ran and passed; `failed` when it ran and failed)."""

    device: Literal["cpu", "cuda"]
    why: str
    passed: Passed | None = None
    failed: PreflightFailed | None = field(default=None)


def choose_device(setting: str, compute_type: str, probe: Probe) -> DeviceChoice:
    """`cpu` as set; `cuda` with the preflight's verdict (a failure is the caller's to report: it
    must not run); `auto`: cuda when the preflight passes, else cpu, saying why."""
    if setting == "cpu":
        return DeviceChoice("cpu", "device=cpu")
    try:
        passed = preflight(compute_type, probe)
    except PreflightFailed as exc:
        if setting == "cuda":
            return DeviceChoice("cuda", "device=cuda", failed=exc)
        return DeviceChoice("cpu", f"device=auto and no usable GPU: {exc.check}: {exc.cause}", failed=exc)
    return DeviceChoice("cuda", f"device={setting} and the GPU passed its preflight", passed=passed)


def jit_cache() -> str:
    """Where the driver keeps kernels it compiled from PTX (CUDA_CACHE_PATH), and whether that
    lasts longer than this container."""
    path = os.environ.get(CUDA_CACHE_PATH_ENV)
    if not path:
        return "not set: kernels compiled from PTX are lost with the container (~/.nv/ComputeCache)"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable: kernels compiled from PTX are compiled again at every start"
    return path


# ---- the real probe --------------------------------------------------------------------------

CUDA_SUCCESS = 0
CUDA_ERROR_NO_DEVICE = 100
CUDA_ERROR_SYSTEM_DRIVER_MISMATCH = 803
ATTRIBUTE_CAPABILITY_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (cuda.h)
ATTRIBUTE_CAPABILITY_MINOR = 76


class CudaError(Exception):
    def __init__(self, call: str, code: int, name: str) -> None:
        super().__init__(f"{call} returned {name} ({code})")
        self.code = code


class Libcuda:
    """The CUDA driver API, as much as the preflight needs, through ctypes (`lib`: a loaded
    libcuda.so.1, or a stand-in with the same functions)."""

    def __init__(self, lib: Any) -> None:
        self.lib = lib

    def call(self, name: str, *args: Any) -> None:
        code = int(getattr(self.lib, name)(*args))
        if code != CUDA_SUCCESS:
            raise CudaError(name, code, self.error_name(code))

    def error_name(self, code: int) -> str:
        text = ctypes.c_char_p()
        if int(self.lib.cuGetErrorName(code, ctypes.byref(text))) != CUDA_SUCCESS or not text.value:
            return "CUDA_ERROR_UNKNOWN"
        return text.value.decode()

    def init(self) -> Version:
        self.call("cuInit", 0)
        version = ctypes.c_int()
        self.call("cuDriverGetVersion", ctypes.byref(version))
        return version.value // 1000, version.value % 1000 // 10  # 12040 -> (12, 4)

    def device(self) -> Device:
        count, handle = ctypes.c_int(), ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if count.value == 0:
            raise CudaError("cuDeviceGetCount", CUDA_ERROR_NO_DEVICE, "no device")
        self.call("cuDeviceGet", ctypes.byref(handle), 0)
        major, minor, memory = ctypes.c_int(), ctypes.c_int(), ctypes.c_size_t()
        self.call("cuDeviceGetAttribute", ctypes.byref(major), ATTRIBUTE_CAPABILITY_MAJOR, handle)
        self.call("cuDeviceGetAttribute", ctypes.byref(minor), ATTRIBUTE_CAPABILITY_MINOR, handle)
        self.call("cuDeviceTotalMem_v2", ctypes.byref(memory), handle)
        name = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", name, len(name), handle)
        return Device(name.value.decode(), (major.value, minor.value), memory.value, count.value)


def nvml_driver_version(load: Callable[[str], Any] = ctypes.CDLL) -> str | None:
    """The driver's version string from NVML (libnvidia-ml.so.1), or None without NVML."""
    try:
        nvml = load("libnvidia-ml.so.1")
        if int(nvml.nvmlInit_v2()) != 0:
            return None
        try:
            text = ctypes.create_string_buffer(96)
            return text.value.decode() if int(nvml.nvmlSystemGetDriverVersion(text, len(text))) == 0 else None
        finally:
            nvml.nvmlShutdown()
    except (OSError, AttributeError):
        return None


class CudaProbe:
    """The machine's own driver and device (libcuda), and the engine's library (whisper_lib)."""

    def __init__(self, engine: str, load: Callable[[str], Any] = ctypes.CDLL) -> None:
        self.engine_name = engine
        self._load = load
        self._cuda: Libcuda | None = None

    def driver(self) -> Driver:
        try:
            self._cuda = Libcuda(self._load("libcuda.so.1"))
        except OSError as exc:
            raise PreflightFailed(
                "driver", f"no NVIDIA driver: libcuda.so.1 cannot be loaded ({exc})", ACTIONS["driver"]
            ) from exc
        try:
            cuda = self._cuda.init()
        except CudaError as exc:
            if exc.code == CUDA_ERROR_NO_DEVICE:
                raise PreflightFailed("device", f"no CUDA device visible ({exc})", ACTIONS["device"]) from exc
            hint = " (the driver's library does not match its kernel module)" * (
                exc.code == CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
            )
            raise PreflightFailed(
                "driver", f"the NVIDIA driver does not start: {exc}{hint}", ACTIONS["driver"]
            ) from exc
        return Driver(cuda, nvml_driver_version(self._load))

    def device(self) -> Device:
        assert self._cuda is not None, "driver() first"
        try:
            return self._cuda.device()
        except CudaError as exc:
            raise PreflightFailed("device", f"no usable CUDA device ({exc})", ACTIONS["device"]) from exc

    def build(self) -> EngineBuild:
        if self.engine_name == "openai-whisper":
            return torch_build(*whisper_lib.torch_cuda_build())
        version = whisper_lib.library_version("ctranslate2")
        build = ENGINE_BUILDS.get(("ctranslate2", version or ""))
        if build is None:
            raise PreflightFailed(
                "engine",
                f"ctranslate2 {version} is not in the preflight's table of engine builds",
                "read the new wheel's GPU code (NOTES.md) and add it to ENGINE_BUILDS in "
                "gpu_container/worker/preflight.py",
            )
        for library in build.libraries:
            try:
                self._load(library)
            except OSError as exc:
                raise PreflightFailed("engine", f"{build.name} needs {library}: {exc}", ACTIONS["engine"]) from exc
        return build

    def engine(self, compute_type: str) -> str:
        if self.engine_name == "openai-whisper":
            return whisper_lib.torch_cuda_check()
        return whisper_lib.ct2_cuda_check(compute_type)

    def kernel(self) -> float:
        started = time.monotonic()
        if self.engine_name == "openai-whisper":
            whisper_lib.torch_cuda_kernel()
        else:
            whisper_lib.ct2_cuda_kernel()
        return time.monotonic() - started


def _v(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def _branch(cuda: Version) -> str:
    """The driver a CUDA version needs, in words."""
    known = [branch for v, branch in DRIVER_BRANCHES.items() if v >= cuda]
    return f"{min(known)} or later" if known else f"one for CUDA {_v(cuda)}"
