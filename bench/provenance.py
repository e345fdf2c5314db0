"""What a recorded result says about how and where it was made: the command that made it, the
machine, the date and the load average (the machines are shared: only ratios taken within one
run compare across runs). Every benchmark's record starts from `record()`."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def gpu_name() -> str | None:
    """The first CUDA GPU's name, or None. Asks PyTorch only where the benchmark already loaded
    it (importing it costs seconds), else nvidia-smi."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return names[0].strip() if names else None


def hardware() -> dict[str, Any]:
    """The CPU's model name, its cores, Python, the platform and the GPU (where there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    gpu = gpu_name()
    if gpu is not None:
        info["gpu"] = gpu
    return info


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (what else runs on a shared machine)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def command(argv: Sequence[str] | None = None) -> str:
    """The command line that made a result, as it runs from the repository's root: a module of
    this repository as `python -m bench.cost --quick`; `argv`: the arguments, if not sys.argv's."""
    args = list(sys.argv[1:] if argv is None else argv)
    script = Path(sys.argv[0]).resolve()
    if script.suffix == ".py" and script.is_relative_to(ROOT):
        return " ".join(["python", "-m", ".".join(script.relative_to(ROOT).with_suffix("").parts), *args])
    return " ".join(["python", sys.argv[0], *args])


def record(started: float, load_start: list[float], argv: Sequence[str] | None = None) -> dict[str, Any]:
    """A result's provenance, for a run that began at `started` (time.perf_counter()) under the
    load average `load_start`."""
    return {
        "command": command(argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": hardware(),
        "load_average": {"start": load_start, "end": load_average()},
        "wall_s": round(time.perf_counter() - started, 1),
    }


def stat(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """A figure as recorded: median, min, max, the number of runs and the runs themselves."""
    vals = [float(v) for v in values]
    return {
        "median": round(statistics.median(vals), digits),
        "min": round(min(vals), digits),
        "max": round(max(vals), digits),
        "runs": len(vals),
        "values": [round(v, digits) for v in vals],
    }
