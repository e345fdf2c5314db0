"""What a worker proves before its first claim, and the one line it logs when it cannot start.

In order (main.Worker): the device its `device` setting becomes (preflight.py: `cuda` must pass
the GPU preflight, never falling back to CPU; `auto` logs what it found and why it chose CPU),
then its engine loaded with the pool's own model. Either failing ends the worker before it
receives a message, with its exit code (batchscribe.resources.WorkerExit), which Batch records
on the worker's job; the stack's alarm counts the line (its `event` is WORKER_NOT_STARTED). A
broken host never costs a job an attempt.
"""

from __future__ import annotations

from typing import Any

from batchscribe.resources import WORKER_NOT_STARTED, WorkerExit
from batchscribe.settings import WorkerSettings
from gpu_container.worker.preflight import DeviceChoice, PreflightFailed, jit_cache
from gpu_container.worker.running import logger


class CannotStart(Exception):
    """The worker must not claim anything: `cause` says what was found, `action` what to do."""

    def __init__(self, code: WorkerExit, check: str, cause: str, action: str) -> None:
        super().__init__(f"{check}: {cause}")
        self.code, self.check, self.cause, self.action = code, check, cause, action

    @classmethod
    def preflight(cls, failed: PreflightFailed) -> CannotStart:
        return cls(
            WorkerExit.DEVICE, failed.check, f"GPU preflight failed at {failed.check}: {failed.cause}", failed.action
        )

    @classmethod
    def engine(cls, engine: str, model: str, device: str, exc: BaseException) -> CannotStart:
        return cls(
            WorkerExit.ENGINE,
            "engine",
            f"{engine} could not load the model {model} on {device}: {type(exc).__name__}: {exc}",
            f"check that the image carries the pool's model ({WorkerSettings.env_name('model_dir')}) and that the "
            "device has the memory for it; no job was claimed",
        )

    def log(self, **context: Any) -> None:
        """The one line: the cause, what to do, and the exit code, before the worker exits."""
        logger.error(
            f"worker not started: {self.cause}. What to do: {self.action}",
            extra={
                "event": WORKER_NOT_STARTED,
                "check": self.check,
                "exit_code": int(self.code),
                "error": self.cause,
                **context,
            },
        )


def log_device(choice: DeviceChoice) -> None:
    """What the preflight found when it passed (and where compiled kernels are kept), or why
    `auto` chose the CPU. A failure under `cuda` is not logged here: the worker's one line is."""
    if choice.passed is not None:
        logger.info("GPU preflight passed", extra={**choice.passed.fields(), "jit_cache": jit_cache()})
    elif choice.device == "cpu" and choice.failed is not None:
        logger.info("running on the CPU", extra={"device": "cpu", "why": choice.why})
