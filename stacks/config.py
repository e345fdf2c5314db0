"""The deployment's configuration: one validated model, read from cdk.json context under
the key `batchscribe` (override any field with `cdk deploy -c batchscribe='{"spot": false}'`
or by editing cdk.json). Every default is documented here and in docs/deploy.md."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchscribe.models import EngineName
from batchscribe.resources import JOBS_MAX_RECEIVE_COUNT
from batchscribe.settings import MAX_ATTEMPTS, Timings
from stacks.instances import spec


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stack_name: str = Field(default="Batchscribe", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,100}$")
    account: str | None = Field(default=None, pattern=r"^\d{12}$", description="omit for an environment-agnostic stack")
    region: str = "us-east-1"

    # compute
    gpu_instance_types: list[str] = Field(
        default_factory=lambda: ["g4dn.xlarge", "g5.xlarge", "g6.xlarge"], min_length=1
    )
    cpu_instance_types: list[str] = Field(
        default_factory=lambda: ["c6i.xlarge", "c7i.xlarge", "m6i.xlarge"], min_length=1
    )
    max_gpu_vcpus: int = Field(default=64, ge=4)
    max_cpu_vcpus: int = Field(default=32, ge=2)
    spot: bool = Field(default=True, description="Spot first, on-demand as the fallback in the queue order")
    gpu_hourly_usd: float | None = Field(
        default=None, ge=0, description="the GPU pool price per worker-hour (per-job cost); default: bench/prices.json"
    )
    cpu_hourly_usd: float | None = Field(
        default=None, ge=0, description="the CPU pool price per worker-hour (per-job cost); default: bench/prices.json"
    )
    max_gpu_workers: int = Field(default=8, ge=1)
    max_cpu_workers: int = Field(default=4, ge=0)
    jobs_per_worker: int = Field(default=4, ge=1, description="backlog a worker is expected to drain")
    small_job_max_mb: int = Field(default=5, ge=0, description="uploads up to this size run on CPU; 0: all on GPU")
    max_attempts: int = Field(
        default=MAX_ATTEMPTS,
        ge=1,
        description="attempts before a job whose workers keep dying, or whose attempts fail, fails",
    )
    gpu_held_jobs: int | None = Field(
        default=None, ge=1, description="K: jobs a GPU worker holds at once; None: the worker's default for the model"
    )
    cpu_held_jobs: int | None = Field(
        default=None, ge=1, description="K: jobs a CPU worker holds at once; None: the worker's default"
    )
    root_volume_gib: int | None = Field(
        default=None, ge=30, description="each worker's disk; None: sized per pool for K inputs, the image and model"
    )
    batch_job_timeout_minutes: int = Field(default=360, ge=10)
    runnable_timeout_minutes: int = Field(default=30, ge=10, description="cancel workers stuck RUNNABLE this long")
    spot_fallback_minutes: int = Field(
        default=10,
        ge=0,
        description="the scaler moves workers RUNNABLE this long on a pool's Spot-first queue to its on-demand "
        "queue (no Spot quota or capacity); 0: never. Below runnable_timeout_minutes",
    )

    # transcription
    engine: EngineName = Field(
        default="faster-whisper",
        description="the GPU pool's engine: faster-whisper (CTranslate2) or openai-whisper (PyTorch, batched)",
    )
    cpu_engine: EngineName = Field(default="faster-whisper", description="the CPU pool's engine")
    model: str = Field(default="large-v3-turbo", description="baked into the GPU image")
    cpu_model: str = Field(default="small", description="baked into the CPU image (small jobs)")

    # limits and retention
    max_upload_mb: int = Field(default=2048, ge=1)
    max_duration_minutes: int = Field(default=240, ge=1)
    upload_retention_days: int = Field(default=3, ge=1)
    output_retention_days: int = Field(default=30, ge=1)
    log_retention_days: int = Field(default=30, ge=1)

    # API
    api_rate_limit: int = Field(default=50, ge=1)
    api_burst_limit: int = Field(default=100, ge=1)
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    console: bool = Field(default=True, description="the web console: CloudFront + S3, Cognito sign-in")
    console_domain_name: str | None = Field(
        default=None,
        pattern=r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
        description="the console's own domain (with console_certificate_arn: served with TLS 1.2+); "
        "default: CloudFront's *.cloudfront.net name",
    )
    console_certificate_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:acm:us-east-1:\d{12}:certificate/[0-9a-f-]+$",
        description="an ACM certificate in us-east-1 (CloudFront's region) for console_domain_name",
    )
    console_domain_prefix: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
        description="the Cognito sign-in page's domain prefix (unique in the region); default: stack name-account",
    )
    high_priority_owners: list[str] | None = Field(
        default=None, description="IAM principal ARNs that may create `high` jobs; None: everyone"
    )
    create_rate_limit: int = Field(default=0, ge=0, description="job creates per owner per window; 0: no limit")
    create_rate_window_seconds: int = Field(default=60, ge=1, le=86400)
    max_running_per_owner: int = Field(
        default=0, ge=0, description="running jobs per owner across all workers (others stay queued); 0: no cap"
    )

    # every timing (leases, heartbeats, visibility, idle exit, schedules, URL lifetimes), checked
    timings: Timings = Field(default_factory=Timings)

    # operations
    alarm_email: str | None = None
    starvation_minutes: int = Field(
        default=30, ge=1, description="alarm when the oldest high or normal job waited longer (low: 4x as long)"
    )
    reserve_concurrency: bool = Field(
        default=False,
        description="reserve one concurrent execution each for the scaler and the sweeper; needs an account "
        "concurrency quota above the new-account default (10), which cannot spare reservations",
    )
    powertools_layer_version: int = Field(
        default=27,
        ge=1,
        description="the AWS-managed Powertools v3 layer: it brings pydantic (compiled for arm64) and the X-Ray "
        "SDK; Powertools itself is bundled in the functions' code, the version the tests run",
    )

    @field_validator("gpu_instance_types")
    @classmethod
    def _gpu_only(cls, value: list[str]) -> list[str]:
        for t in value:
            if not spec(t).gpus:
                raise ValueError(f"{t} is not a GPU instance type")
        return value

    @field_validator("cpu_instance_types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for t in value:
            spec(t)
        return value

    @model_validator(mode="after")
    def _relations(self) -> DeploymentConfig:
        if self.max_attempts > JOBS_MAX_RECEIVE_COUNT:
            raise ValueError(f"max_attempts may not exceed the jobs queues' maxReceiveCount ({JOBS_MAX_RECEIVE_COUNT})")
        if self.upload_retention_days * 86400 <= self.timings.upload_window_seconds:
            raise ValueError("uploads must be kept longer than the upload window")
        if self.spot_fallback_minutes >= self.runnable_timeout_minutes:
            raise ValueError("spot_fallback_minutes must be below runnable_timeout_minutes (the queue cancels then)")
        if (self.console_domain_name is None) != (self.console_certificate_arn is None):
            raise ValueError("console_domain_name and console_certificate_arn go together")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def cpu_pool(self) -> bool:
        """Small uploads run on a CPU pool (with `cpu_model`)."""
        return self.small_job_max_mb > 0 and self.max_cpu_workers > 0

    @classmethod
    def from_context(cls, raw: Any) -> DeploymentConfig:
        if isinstance(raw, str):
            raw = json.loads(raw)
        return cls.model_validate(raw or {})
