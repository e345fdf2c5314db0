"""The Batch stand-in: workers as local processes behind the scaler's Compute interface (the
worker program from this checkout, or the worker image run by podman), the scaler's logic on
its schedule against them, and a worker's end reported to the reconciler as Batch's job state
change event would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from batchscribe.scaler import Pool, scale, sqs_depth
from batchscribe.settings import WorkerSettings
from batchscribe_cli.local.handlers import Handler
from batchscribe_cli.local.lambda_events import LocalContext, batch_state_change

REPO_ROOT = Path(__file__).resolve().parents[2]  # the tree this local stack runs from


class LocalCompute:
    """Workers as local processes (the scaler's Compute interface): the worker program, or,
    with `image`, the worker image run by podman on the host network, as it runs on Batch.
    Each gets the worker's settings with its own worker id; when one ends,
    `on_exit(worker_id, code)` runs (the local stand-in for Batch's job state change event)."""

    def __init__(
        self,
        settings: WorkerSettings,
        base_env: dict[str, str],
        log_dir: Path,
        say: Callable[[str], None],
        on_exit: Callable[[str, int], None] | None = None,
        image: str | None = None,
    ) -> None:
        self.settings = settings
        self.base_env = base_env
        self.image = image
        self.log_dir = log_dir
        self.say = say
        self.on_exit = on_exit
        self.procs: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self.started = 0
        self.peak = 0
        self.closed = False  # stopping: a scaler tick still under way starts nothing more
        self._lock = threading.Lock()

    def env_for(self, worker_id: str) -> dict[str, str]:
        return {**self.base_env, **self.settings.model_copy(update={"worker_id": worker_id}).to_env()}

    def command(self, worker_id: str) -> tuple[list[str], dict[str, str] | None]:
        """The command that starts one worker, and the environment it runs with."""
        env = self.env_for(worker_id)
        if self.image is None:
            # this tree's worker, whatever an editable install elsewhere may point at
            path = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
            return [sys.executable, "-m", "gpu_container.worker"], {**env, "PYTHONPATH": path}
        # The container gets the worker's environment only (nothing of this machine's); the
        # podman client keeps this process's environment (CONTAINERS_CONF and the like) and
        # passes SIGTERM on to the worker.
        args = ["podman", "run", "--rm", "--network", "host", "--name", worker_id]
        for name in sorted(env):
            args += ["--env", name]
        return [*args, self.image], {**os.environ, **env}

    def reap(self) -> None:
        ended: list[tuple[str, int]] = []
        with self._lock:
            for pid, (worker_id, proc) in list(self.procs.items()):
                code = proc.poll()
                if code is not None:
                    del self.procs[pid]
                    how = "idle, exited" if code == 0 else f"exited with code {code}"
                    self.say(f"worker {pid} {how}; {len(self.procs)} running")
                    ended.append((worker_id, code))
        if self.on_exit is not None:
            for worker_id, code in ended:
                self.on_exit(worker_id, code)

    def active(self, pool: Pool) -> int:
        self.reap()
        return len(self.procs)

    def submit(self, pool: Pool, count: int) -> None:
        with self._lock:
            if self.closed:
                return
            for _ in range(count):
                self._start_one()
            self.peak = max(self.peak, len(self.procs))
            self.say(f"scaler: started {count} worker(s); {len(self.procs)} running")

    def _start_one(self) -> None:
        worker_id = f"local-{uuid.uuid4().hex[:12]}"
        argv, env = self.command(worker_id)
        with (self.log_dir / f"worker-{int(time.time() * 1000)}-{self.started}.log").open("ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[proc.pid] = (worker_id, proc)
        self.started += 1

    def pids(self) -> list[int]:
        with self._lock:
            return [pid for pid, (_, p) in self.procs.items() if p.poll() is None]

    def stop_all(self, timeout: float = 10) -> None:
        with self._lock:
            self.closed = True
            procs = [p for _, p in self.procs.values()]
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: a worker gives its job back and exits
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.reap()


def scaler_tick(compute: LocalCompute, pools: Callable[[], list[Pool]]) -> Callable[[], None]:
    """The scaler's logic with local processes for compute (Batch when deployed); `pools` is
    read at each tick (a test may change the worker cap while the stack runs)."""

    def tick() -> None:
        compute.reap()
        scale(pools(), sqs_depth, compute)

    return tick


def report_exits(reconciler: Handler, say: Callable[[str], None]) -> Callable[[str, int], None]:
    """A worker's end, delivered to the reconciler as Batch's job state change event."""

    def worker_exited(worker_id: str, code: int) -> None:
        counts = reconciler(batch_state_change(worker_id, "SUCCEEDED" if code == 0 else "FAILED"), LocalContext())
        if any(counts.values()):
            say(f"reconciler: worker {worker_id} ended holding jobs: {counts}")

    return worker_exited
