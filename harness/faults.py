"""Fault injection for the chaos run: AWS calls that fail, stall, or succeed while the caller
is told they failed. The harness controls it; no production code path imports it.

`install(plan)` wraps `batchscribe.aws.client` in this process so every client it makes gets
botocore event hooks:

- `before-send`: with probability `error_rate` the request never reaches the service and the
  connection is reported closed (botocore's own retries see a transient network fault);
  with probability `latency_rate` it is held for up to `max_latency` seconds first.
- `after-call`: with probability `ambiguous_rate` a call that *succeeded* is reported to the
  caller as a read timeout, so the caller retries (or gives up on) something that happened:
  the duplicate and half-done effects at-least-once delivery must absorb.

Worker processes get the same hooks through a `sitecustomize` module on their PYTHONPATH
(`worker_env`), which reads the plan from the environment; the PYTHONPATH also names the folder
that holds this `harness` package, so a worker imports it wherever the worker program lives.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

PLAN_ENV = "CHAOS_FAULT_PLAN"  # the harness's own variable (not a service setting)


@dataclass(frozen=True)
class FaultPlan:
    error_rate: float = 0.03
    latency_rate: float = 0.05
    max_latency: float = 1.0
    ambiguous_rate: float = 0.01
    seed: int = 1
    # operations never touched (in the local stack's own process: the emulated event sources'
    # ReceiveMessage/DeleteMessage and its Scan of the table are AWS's part, not the service's)
    spared: tuple[str, ...] = ()

    def to_env(self) -> dict[str, str]:
        return {PLAN_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        raw = os.environ.get(PLAN_ENV)
        if not raw:
            return None
        data = json.loads(raw)
        data["spared"] = tuple(data.get("spared", ()))
        return cls(**data)


@dataclass
class FaultCounts:
    errors: int = 0
    delays: int = 0
    ambiguous: int = 0


COUNTS = FaultCounts()
_lock = threading.Lock()


def _hooks(plan: FaultPlan, rng: random.Random) -> tuple[Any, Any]:
    def before_send(request: Any, event_name: str = "", **_: Any) -> None:
        if event_name.rsplit(".", 1)[-1] in plan.spared:
            return
        with _lock:
            roll_error, roll_delay, delay = rng.random(), rng.random(), rng.uniform(0, plan.max_latency)
        if roll_delay < plan.latency_rate:
            COUNTS.delays += 1
            time.sleep(delay)
        if roll_error < plan.error_rate:
            COUNTS.errors += 1
            raise ConnectionClosedError(endpoint_url=request.url)

    def after_call(http_response: Any, model: Any, **_: Any) -> None:
        if model.name in plan.spared or http_response.status_code >= 300:
            return
        with _lock:
            roll = rng.random()
        if roll < plan.ambiguous_rate:
            COUNTS.ambiguous += 1
            raise ReadTimeoutError(endpoint_url=f"(chaos) {model.name}")

    return before_send, after_call


def install(plan: FaultPlan) -> None:
    """Every client `batchscribe.aws` makes from now on in this process injects faults."""
    from batchscribe import aws

    if getattr(aws.client, "_chaos", False):
        return
    original = aws.client
    rng = random.Random(plan.seed ^ os.getpid())
    before_send, after_call = _hooks(plan, rng)

    def client(service: str) -> Any:
        c = original(service)
        if not getattr(c, "_chaos_hooked", False):
            c._chaos_hooked = True
            c.meta.events.register("before-send", before_send)
            c.meta.events.register("after-call", after_call)
        return c

    client._chaos = True  # type: ignore[attr-defined]
    client.original = original  # type: ignore[attr-defined]
    client.cache_clear = original.cache_clear  # type: ignore[attr-defined]  # aws.reset() still works
    aws.client = client  # type: ignore[assignment]


def uninstall() -> None:
    """Back to plain clients (made anew: the hooked ones are forgotten)."""
    from batchscribe import aws

    if getattr(aws.client, "_chaos", False):
        aws.client = aws.client.original  # type: ignore[attr-defined]
        aws.reset()


def install_from_env() -> None:
    plan = FaultPlan.from_env()
    if plan is not None:
        install(plan)


def worker_env(plan: FaultPlan, folder: Path) -> dict[str, str]:
    """Environment that makes a worker process inject the same faults: a sitecustomize module
    (imported by Python at start) in `folder`, prepended to PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text("from harness.faults import install_from_env\n\ninstall_from_env()\n")
    harness_root = str(Path(__file__).resolve().parents[1])  # the folder `import harness` needs
    path = os.pathsep.join(p for p in (str(folder), harness_root, os.environ.get("PYTHONPATH", "")) if p)
    return {**plan.to_env(), "PYTHONPATH": path}
