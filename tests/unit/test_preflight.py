"""The GPU preflight's decisions, with the machine faked at its one seam (`Probe`), and its real
probe's parsing with libcuda faked at ctypes' level: which driver and device each engine build
runs on (the table held to the installed wheel), the order of the checks, what `auto` chooses
and says, and what the real probe says on this GPU-less machine."""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from gpu_container.worker import preflight as pf
from gpu_container.worker.preflight import (
    ENGINE_BUILDS,
    CudaProbe,
    Device,
    Driver,
    Libcuda,
    PreflightFailed,
    check_build,
    choose_device,
    torch_build,
)
from tests.fake_gpu import A10G, B200, CT2, H100, K80, L4, R535, R550, R570, T4, FakeProbe

# ---- the table, held to the wheel -------------------------------------------------------------


def fatbin_code(library: Path) -> set[tuple[str, int]]:
    """(SASS | PTX, sm) of every CUDA fatbinary in a shared library (NVIDIA's fatbin layout:
    a header with magic 0xBA55ED50, then entries: kind 1 PTX / 2 ELF, the sm at offset 28)."""
    data = library.read_bytes()
    found: set[tuple[str, int]] = set()
    at = data.find(struct.pack("<I", 0xBA55ED50))
    while at >= 0:
        header, size = struct.unpack_from("<HQ", data, at + 6)
        entry, end = at + header, at + header + size
        while entry < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            found.add(("PTX" if kind == 1 else "SASS", struct.unpack_from("<I", data, entry + 28)[0]))
            if entry_header == 0:
                break
            entry += entry_header + payload
        at = data.find(struct.pack("<I", 0xBA55ED50), end)
    return found


def test_the_ctranslate2_entry_is_what_the_installed_wheel_carries() -> None:
    """If ctranslate2 is upgraded, this fails until the new build's GPU code is in the table."""
    version = metadata.version("ctranslate2")
    build = ENGINE_BUILDS.get(("ctranslate2", version))
    assert build is not None, f"ctranslate2 {version} is not in preflight.ENGINE_BUILDS"
    files = metadata.files("ctranslate2") or []
    library = next(Path(str(f.locate())) for f in files if "libctranslate2" in str(f))
    code = fatbin_code(library)
    assert {sm for kind, sm in code if kind == "SASS"} == {a * 10 + b for a, b in build.sass}
    assert {sm for kind, sm in code if kind == "PTX"} == {a * 10 + b for a, b in build.ptx}


# ---- which builds run where ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "driver", "code"),
    [
        (T4, R535, "sass"),  # sm_75 is in the build
        (A10G, R535, "sass"),
        (L4, R535, "sass"),  # sm_89 runs sm_86 machine code (same major)
        (H100, R570, "ptx"),  # sm_90: the driver compiles the sm_86 PTX
        (B200, R570, "ptx"),
    ],
)
def test_a_build_runs_its_own_code_or_ptx_the_driver_compiles(device: Device, driver: Driver, code: str) -> None:
    assert check_build(CT2, driver, device) == code


def test_an_h100_under_a_driver_older_than_570_fails_naming_both() -> None:
    with pytest.raises(PreflightFailed) as failed:
        check_build(CT2, R550, H100)
    assert failed.value.check == "driver"
    assert "NVIDIA H100 80GB HBM3 (sm_90)" in failed.value.cause and "550.144.03 (CUDA 12.4)" in failed.value.cause
    assert "570 or later" in failed.value.cause and "570 or later" in failed.value.action


def test_a_driver_without_cuda_12_fails_whatever_the_device() -> None:
    with pytest.raises(PreflightFailed, match=r"CUDA 12.0 or later \(525 or later\).*520.61.05") as failed:
        check_build(CT2, Driver((11, 8), "520.61.05"), T4)
    assert failed.value.check == "driver"


def test_a_device_older_than_the_build_fails_on_the_device() -> None:
    with pytest.raises(PreflightFailed, match=r"no code that runs on Tesla K80 \(sm_37\)") as failed:
        check_build(CT2, R570, K80)
    assert failed.value.check == "device"


def test_a_torch_build_is_read_from_what_torch_reports() -> None:
    build = torch_build("2.8.0+cu128", "12.8", ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"])
    assert build.cuda == (12, 8) and (9, 0) in build.sass and (10, 0) in build.sass and build.ptx == ((12, 0),)
    assert check_build(build, R535, H100) == "sass"  # no JIT: any CUDA 12 driver
    with pytest.raises(PreflightFailed, match="CPU build") as failed:
        torch_build("2.13.0+cpu", None, [])
    assert failed.value.check == "engine build"


# ---- the steps, in order ----------------------------------------------------------------------


def test_a_passing_preflight_runs_every_check_and_reports_what_it_found() -> None:
    probe = FakeProbe()
    passed = pf.preflight("auto", probe)
    assert probe.calls == ["driver", "device", "build", "engine", "kernel"]
    fields = passed.fields()
    assert fields["gpu"] == "NVIDIA H100 80GB HBM3 (sm_90)" and fields["driver"] == "570.133.20 (CUDA 12.8)"
    assert fields["gpu_code"] == "PTX compiled by the driver" and fields["compute_type"] == "float16"
    assert fields["gpu_memory_mib"] == 80 * 1024 and fields["kernel_seconds"] == 0.25


def test_a_build_that_cannot_run_stops_before_the_engine_and_the_kernel() -> None:
    probe = FakeProbe(driver=R550)
    with pytest.raises(PreflightFailed):
        pf.preflight("auto", probe)
    assert probe.calls == ["driver", "device", "build"]


def test_a_library_error_is_named_with_its_steps_advice() -> None:
    error = RuntimeError("CUDA failed with error the provided PTX was compiled with an unsupported toolchain.")
    with pytest.raises(PreflightFailed) as failed:
        pf.preflight("auto", FakeProbe(kernel=error))
    assert failed.value.check == "kernel"
    assert failed.value.cause.startswith("RuntimeError: CUDA failed with error the provided PTX")
    assert failed.value.action == pf.ACTIONS["kernel"]


def test_cpu_probes_nothing() -> None:
    probe = FakeProbe()
    assert choose_device("cpu", "auto", probe).device == "cpu" and probe.calls == []


def test_auto_takes_a_gpu_that_passes_and_says_why_it_took_the_cpu_otherwise() -> None:
    passing = choose_device("auto", "auto", FakeProbe())
    assert (passing.device, passing.passed is not None) == ("cuda", True)
    failing = choose_device("auto", "auto", FakeProbe(driver=R550))
    assert failing.device == "cpu" and failing.failed is not None
    assert failing.why.startswith("device=auto and no usable GPU: driver: CTranslate2 4.8.5 carries no machine code")


def test_cuda_stays_cuda_with_the_failure_to_report() -> None:
    choice = choose_device("cuda", "auto", FakeProbe(device=K80))
    assert choice.device == "cuda" and choice.failed is not None and choice.failed.check == "device"


# ---- the real probe ---------------------------------------------------------------------------


class FakeLibcuda:
    """libcuda's functions as ctypes calls them: results written through the byref arguments."""

    def __init__(self, *, version: int = 12080, devices: int = 1, init: int = 0) -> None:
        self.version, self.devices, self.init_code = version, devices, init

    @staticmethod
    def _set(ref: Any, value: Any) -> int:
        ref._obj.value = value
        return 0

    def cuInit(self, _flags: int) -> int:
        return self.init_code

    def cuGetErrorName(self, code: int, ref: Any) -> int:
        names = {100: b"CUDA_ERROR_NO_DEVICE", 803: b"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"}
        return self._set(ref, names.get(code, b"CUDA_ERROR_UNKNOWN"))

    def cuDriverGetVersion(self, ref: Any) -> int:
        return self._set(ref, self.version)

    def cuDeviceGetCount(self, ref: Any) -> int:
        return self._set(ref, self.devices)

    def cuDeviceGet(self, ref: Any, ordinal: int) -> int:
        return self._set(ref, ordinal)

    def cuDeviceGetAttribute(self, ref: Any, attribute: int, _device: Any) -> int:
        return self._set(ref, {75: 9, 76: 0}[attribute])

    def cuDeviceTotalMem_v2(self, ref: Any, _device: Any) -> int:
        return self._set(ref, 80 * 2**30)

    def cuDeviceGetName(self, buffer: Any, size: int, _device: Any) -> int:
        ctypes.memmove(buffer, b"NVIDIA H100 80GB HBM3\0", 22)
        return 0


def loader(libs: dict[str, Any]) -> Callable[[str], Any]:
    def load(name: str) -> Any:
        if name not in libs:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return libs[name]

    return load


def test_libcuda_is_read_through_ctypes() -> None:
    cuda = Libcuda(FakeLibcuda(version=12040, devices=2))
    assert cuda.init() == (12, 4)
    assert cuda.device() == Device("NVIDIA H100 80GB HBM3", (9, 0), 80 * 2**30, 2)


def test_the_real_probe_names_a_missing_device_and_a_mismatched_driver() -> None:
    probe = CudaProbe("faster-whisper", load=loader({"libcuda.so.1": FakeLibcuda(init=100)}))
    with pytest.raises(PreflightFailed, match=r"no CUDA device visible \(cuInit returned CUDA_ERROR_NO_DEVICE") as f:
        probe.driver()
    assert f.value.check == "device"
    probe = CudaProbe("faster-whisper", load=loader({"libcuda.so.1": FakeLibcuda(init=803)}))
    with pytest.raises(PreflightFailed, match="does not match its kernel module"):
        probe.driver()


def test_the_real_probe_reads_the_driver_without_nvml_and_needs_cublas_12() -> None:
    probe = CudaProbe("faster-whisper", load=loader({"libcuda.so.1": FakeLibcuda()}))
    assert probe.driver() == Driver((12, 8), None)
    assert probe.device().label == "NVIDIA H100 80GB HBM3 (sm_90)"
    with pytest.raises(PreflightFailed, match=r"CTranslate2 4\.8\.5 needs libcublas\.so\.12") as failed:
        probe.build()
    assert failed.value.check == "engine"
    with_cublas = CudaProbe("faster-whisper", load=loader({"libcublas.so.12": object()}))
    assert with_cublas.build() == CT2


def test_an_engine_version_missing_from_the_table_says_where_to_add_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf.whisper_lib, "library_version", lambda _name: "4.9.0")
    with pytest.raises(PreflightFailed, match=r"ctranslate2 4\.9\.0 is not in the preflight.s table") as failed:
        CudaProbe("faster-whisper").build()
    assert "ENGINE_BUILDS" in failed.value.action


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="this machine has an NVIDIA driver")
@pytest.mark.parametrize("engine", ["faster-whisper", "openai-whisper"])
def test_on_this_gpu_less_machine_the_real_probe_stops_at_the_driver(engine: str) -> None:
    with pytest.raises(PreflightFailed) as failed:
        pf.preflight("auto", CudaProbe(engine))
    assert failed.value.check == "driver"
    assert failed.value.cause.startswith("no NVIDIA driver: libcuda.so.1 cannot be loaded")


def test_the_jit_cache_says_whether_it_outlives_the_container(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_CACHE_PATH", raising=False)
    assert pf.jit_cache().startswith("not set")
    monkeypatch.setenv("CUDA_CACHE_PATH", str(tmp_path / "absent"))
    assert "not writable" in pf.jit_cache()
    monkeypatch.setenv("CUDA_CACHE_PATH", str(tmp_path))
    assert pf.jit_cache() == str(tmp_path)


def test_the_driver_branches_grow_with_cuda() -> None:
    pairs = sorted(pf.DRIVER_BRANCHES.items())
    assert [b for _, b in pairs] == sorted(b for _, b in pairs)
    assert Counter(pf.DRIVER_BRANCHES.values()).most_common(1)[0][1] == 1
