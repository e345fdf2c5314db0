"""A GPU machine of a test's choosing, at the worker's one seam for it (preflight.Probe): the
devices and drivers of the cases the preflight decides between."""

from __future__ import annotations

from typing import Any

from gpu_container.worker.preflight import ENGINE_BUILDS, Device, Driver, EngineBuild

CT2 = ENGINE_BUILDS[("ctranslate2", "4.8.5")]
T4 = Device("Tesla T4", (7, 5), 16 * 2**30)
A10G = Device("NVIDIA A10G", (8, 6), 24 * 2**30)
L4 = Device("NVIDIA L4", (8, 9), 24 * 2**30)
H100 = Device("NVIDIA H100 80GB HBM3", (9, 0), 80 * 2**30)
B200 = Device("NVIDIA B200", (10, 0), 180 * 2**30)
K80 = Device("Tesla K80", (3, 7), 12 * 2**30)
R535, R550, R570 = Driver((12, 2), "535.230.02"), Driver((12, 4), "550.144.03"), Driver((12, 8), "570.133.20")


class FakeProbe:
    """A machine of the test's choosing; `fail` maps a step to what it raises."""

    def __init__(self, driver: Driver = R570, device: Device = H100, **fail: BaseException) -> None:
        self._driver, self._device, self.fail = driver, device, fail
        self.calls: list[str] = []

    def _step(self, name: str, value: Any) -> Any:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]
        return value

    def driver(self) -> Driver:
        return self._step("driver", self._driver)

    def device(self) -> Device:
        return self._step("device", self._device)

    def build(self) -> EngineBuild:
        return self._step("build", CT2)

    def engine(self, compute_type: str) -> str:
        return self._step("engine", "float16" if compute_type == "auto" else compute_type)

    def kernel(self) -> float:
        return self._step("kernel", 0.25)
