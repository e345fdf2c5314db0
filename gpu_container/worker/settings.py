"""Worker settings, validated once at start (BATCHSCRIBE_* environment variables)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from batchscribe.settings import load


class WorkerSettings(BaseModel):
    table_name: str
    bucket_name: str
    jobs_queue_url: str
    engine: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    model: str = "tiny.en"
    model_path: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"
    cpu_threads: int = Field(default=0, ge=0)
    beam_size: int = Field(default=5, ge=1, le=10)
    batched: Literal["auto", "always", "never"] = "auto"
    allow_download: bool = False
    # scale to zero: exit after this long with no message; 0 jobs = no cap
    idle_exit_seconds: float = Field(default=60, gt=0)
    max_jobs: int = Field(default=0, ge=0)
    poll_seconds: int = Field(default=10, ge=0, le=20)
    # leases: the heartbeat extends the job's lease and the message's visibility; the lease
    # is shorter than the visibility, so a message that comes back finds the lease expired.
    heartbeat_seconds: float = Field(default=5, gt=0)
    lease_seconds: int = Field(default=90, gt=0)
    visibility_seconds: int = Field(default=120, gt=0)
    max_duration_seconds: float = Field(default=4 * 3600, gt=0)
    worker_id: str = Field(
        default_factory=lambda: os.environ.get("AWS_BATCH_JOB_ID") or f"{socket.gethostname()}-{os.getpid()}"
    )

    @model_validator(mode="after")
    def _lease_fits(self) -> WorkerSettings:
        if not self.heartbeat_seconds < self.lease_seconds < self.visibility_seconds:
            raise ValueError("need heartbeat_seconds < lease_seconds < visibility_seconds")
        return self

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WorkerSettings:
        return load(cls, environ)
