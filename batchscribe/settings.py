"""Every process's configuration, in one place: one pydantic model per process.

Each process (the API, the upload intake, the lifecycle functions, the scaler, the notifier,
the worker, the CLI) reads its model once at start with `from_env()`; a missing or invalid
variable fails at start with the variable's name. The CDK stack and the local stack write
each process's environment with `to_env()` from the same model, so a variable's name is
typed exactly once: here, as a field name (`table_name` -> `BATCHSCRIBE_TABLE_NAME`).

Timings live in one model too (`Timings`), with the relations between them checked.

(Plain pydantic rather than pydantic-settings: the Lambda functions get pydantic from the
AWS-managed Powertools layer, which does not carry pydantic-settings, and their code asset
is staged without pip. The loader below is the small part of it this service needs.)
"""

from __future__ import annotations

import json
import os
import socket
import types
from collections.abc import Mapping
from typing import Any, Literal, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from batchscribe.models import EngineName, Priority
from batchscribe.resources import WORKER_NAME_PREFIX

ENV_PREFIX = "BATCHSCRIBE_"
METRICS_NAMESPACE = "Batchscribe"
# a worker's batch ran out of GPU memory (its batch size halved, or one window failed)
BATCH_OUT_OF_MEMORY_METRIC = "WorkerBatchOutOfMemory"
WORKER_METRICS_SERVICE = "worker"  # the `service` dimension of the worker's metrics
SERVICE_NAME = "batchscribe"


class ConfigError(RuntimeError):
    """A process's environment is missing or has invalid settings (raised at start)."""


def _is_text(annotation: Any) -> bool:
    """Fields whose environment value is the raw string (everything else is JSON)."""
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return all(a is str or a is type(None) for a in get_args(annotation))
    return get_origin(annotation) is Literal and all(isinstance(a, str) for a in get_args(annotation))


class EnvSettings(BaseModel):
    """A settings model that reads and writes `BATCHSCRIBE_*` environment variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def env_name(cls, field: str) -> str:
        if field not in cls.model_fields:
            raise KeyError(f"{cls.__name__} has no setting {field!r}")
        return ENV_PREFIX + field.upper()

    @classmethod
    def env_names(cls) -> frozenset[str]:
        return frozenset(cls.env_name(f) for f in cls.model_fields)

    @classmethod
    def required_env_names(cls) -> frozenset[str]:
        return frozenset(cls.env_name(f) for f, info in cls.model_fields.items() if info.is_required())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            raw = env.get(cls.env_name(name))
            if raw is None:
                continue
            if _is_text(info.annotation):
                values[name] = raw
            else:
                try:
                    values[name] = json.loads(raw)
                except ValueError:
                    values[name] = raw  # let validation say what is wrong with it
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = [
                f"{cls.env_name(str(e['loc'][0]))}: {'missing' if e['type'] == 'missing' else e['msg']}"
                for e in exc.errors()
                if e["loc"]
            ] or [str(exc)]
            raise ConfigError(f"{cls.__name__} from the environment: {'; '.join(problems)}") from exc

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings (None values are left out)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            out[self.env_name(name)] = text
        return out


# ---- timings --------------------------------------------------------------------------


class Timings(BaseModel):
    """Every timing the service depends on, and how they must relate.

    Worker leases: the worker's heartbeat extends its job's lease and its message's
    visibility every `heartbeat_seconds`. The lease is shorter than the visibility, so when a
    worker dies, its lease has expired by the time its message comes back and the next worker
    takes the job over at once (a message that came back first would be deferred, costing a
    receive towards the dead-letter limit).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_seconds: float = Field(default=5, gt=0, description="worker heartbeat period")
    lease_seconds: int = Field(default=90, gt=0, description="a claim lasts this long without a heartbeat")
    visibility_seconds: int = Field(default=120, gt=0, description="jobs queues' visibility timeout")
    idle_exit_seconds: float = Field(default=120, gt=0, description="a worker exits after this long idle")
    poll_seconds: int = Field(default=10, ge=0, le=20, description="SQS long-poll wait of the worker")
    scale_every_seconds: int = Field(default=60, ge=1, description="scaler schedule")
    sweep_every_seconds: int = Field(default=60, ge=1, description="sweeper schedule")
    intake_timeout_seconds: int = Field(default=60, ge=1, description="on_upload function timeout")
    uploads_visibility_seconds: int = Field(default=360, ge=1, description="uploads queue visibility timeout")
    dead_letter_timeout_seconds: int = Field(default=60, ge=1, description="dead_letter function timeout")
    dlq_visibility_seconds: int = Field(default=360, ge=1, description="jobs DLQs' visibility timeout")
    upload_window_seconds: int = Field(default=3600, ge=60, le=7 * 86400, description="presigned POST lifetime")
    result_url_seconds: int = Field(default=3600, ge=60, le=7 * 86400, description="presigned result URL lifetime")
    queued_redrive_seconds: int = Field(
        default=600,
        ge=1,
        description="a job queued this long without a claim gets its message sent again (then 2x, 4x, ... as long)",
    )

    @model_validator(mode="after")
    def _relations(self) -> Self:
        problems = [
            text
            for ok, text in (
                (self.heartbeat_seconds * 2 <= self.lease_seconds, "two heartbeats must fit in a lease"),
                (self.lease_seconds < self.visibility_seconds, "lease_seconds < visibility_seconds"),
                (self.poll_seconds < self.idle_exit_seconds, "poll_seconds < idle_exit_seconds"),
                (
                    self.queued_redrive_seconds >= self.visibility_seconds,
                    "queued_redrive_seconds >= visibility_seconds (a message a worker holds is not lost)",
                ),
                (
                    self.uploads_visibility_seconds >= 6 * self.intake_timeout_seconds,
                    "uploads_visibility_seconds >= 6 x intake_timeout_seconds (Lambda's SQS event source rule)",
                ),
                (
                    self.dlq_visibility_seconds >= 6 * self.dead_letter_timeout_seconds,
                    "dlq_visibility_seconds >= 6 x dead_letter_timeout_seconds (Lambda's SQS event source rule)",
                ),
            )
            if not ok
        ]
        if problems:
            raise ValueError("inconsistent timings: " + "; ".join(problems))
        return self

    def replace(self, **changes: Any) -> Timings:
        """A copy with some timings changed, the relations checked again."""
        return Timings.model_validate({**self.model_dump(), **changes})

    @classmethod
    def local(cls) -> Timings:
        """Short timings for the local stack, so recovery paths show within seconds."""
        return cls(
            heartbeat_seconds=1,
            lease_seconds=6,
            visibility_seconds=10,
            idle_exit_seconds=5,
            poll_seconds=1,
            scale_every_seconds=1,
            sweep_every_seconds=2,
            intake_timeout_seconds=10,
            uploads_visibility_seconds=60,
            dead_letter_timeout_seconds=10,
            dlq_visibility_seconds=60,
            queued_redrive_seconds=15,
        )


# ---- the processes ---------------------------------------------------------------------


class Pool(BaseModel):
    """One kind of worker and the queue it drains (the scaler's view of a pool)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9-]{1,20}$")
    queue_url: str
    class_queue_urls: dict[Priority, str] = Field(
        default_factory=dict,
        description="the pool's other priority classes' queues (`high`, `low`); `normal` is the main queue",
    )
    max_workers: int = Field(ge=0)
    jobs_per_worker: int = Field(default=4, ge=1)
    held_jobs: int = Field(
        default=0, ge=0, description="K: the jobs one worker holds at once (its free slots); 0: jobs_per_worker"
    )
    job_queue: str = ""  # Batch job queue (deployed): Spot first, when the deployment uses Spot
    job_definition: str = ""  # Batch job definition (deployed)
    on_demand_job_queue: str = Field(
        default="",
        description="the pool's on-demand-only Batch job queue: workers stuck RUNNABLE on `job_queue` past "
        "ScalerSettings.spot_fallback_seconds move there; empty: no fallback (an on-demand-only deployment)",
    )

    @property
    def slots_per_worker(self) -> int:
        """The jobs one running worker holds at most (the scaler's measure of its free slots)."""
        return self.held_jobs or self.jobs_per_worker


class StoreSettings(EnvSettings):
    """Where jobs and their files are: every process that reads or writes a job has these."""

    table_name: str = Field(min_length=1)
    bucket_name: str = Field(min_length=1)


class RoutingSettings(EnvSettings):
    """Which queue a job's message goes to: small uploads to the CPU pool when it exists."""

    jobs_queue_url: str = Field(min_length=1)
    class_queue_urls: dict[Priority, str] = Field(
        default_factory=dict,
        description="the pool's other priority classes' queues (`high`, `low`); `normal` is the main queue",
    )
    small_jobs_queue_url: str | None = None
    small_class_queue_urls: dict[Priority, str] = Field(
        default_factory=dict, description="the CPU pool's `high` and `low` queues, when it has them"
    )
    small_job_max_bytes: int = Field(default=0, ge=0, description="0: every job goes to the GPU pool")
    small_job_model: str | None = Field(
        default=None, description="the CPU pool's model: a small job asking for another model goes to the GPU pool"
    )

    def small_pool_takes(self, size: int, model: str | None) -> bool:
        """Whether a job of `size` bytes asking for `model` (None: the pool's own) runs on the
        CPU pool: small enough, and not asking for a model that pool does not serve."""
        return (
            bool(self.small_jobs_queue_url)
            and size <= self.small_job_max_bytes
            and (model is None or self.small_job_model is None or model == self.small_job_model)
        )


class ApiSettings(StoreSettings):
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    cors_origins: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="browser origins")
    upload_window_seconds: int = Field(default=Timings().upload_window_seconds, gt=0)
    result_url_seconds: int = Field(default=Timings().result_url_seconds, gt=0)
    job_retention_days: int = Field(default=30, gt=0)
    default_model: str | None = Field(
        default=None, description="the model a job without options.model runs on (the GPU pool's)"
    )
    default_pool: str = Field(
        default="gpu", description="the pool jobs without options.model run on, as GET /models names it"
    )
    small_job_model: str | None = Field(default=None, description="the CPU pool's model, when small jobs go there")
    small_job_max_bytes: int = Field(default=0, ge=0, description="uploads up to this size run on the CPU pool")
    allow_private: bool = Field(
        default=False, description="http:// and private callback and source URLs (local stack only)"
    )
    scaler_function_name: str | None = Field(default=None, description="woken when a source-URL job is queued")
    multipart_part_bytes: int = Field(
        default=16 * 1024 * 1024, ge=5 * 1024 * 1024, description="part size of multipart uploads (S3: >= 5 MiB)"
    )
    high_priority_owners: list[str] | None = Field(
        default=None, description="owners (IAM principal ARNs) that may create `high` jobs; None: everyone"
    )
    create_rate_limit: int = Field(default=0, ge=0, description="creates per owner per window; 0: no limit")
    create_rate_window_seconds: int = Field(default=60, ge=1, le=86400, description="the rate limit's window")
    routing: RoutingSettings | None = Field(
        default=None, description="the pools' queues: GET shows a queued job's position and estimate (None: not)"
    )


class IntakeSettings(StoreSettings, RoutingSettings):
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    scaler_function_name: str | None = Field(default=None, description="woken after an enqueue, when set")


MAX_ATTEMPTS = 3  # attempts a job gets (claims), whether its workers die or its attempts fail transiently


class LifecycleSettings(StoreSettings, RoutingSettings):
    """dead_letter, sweeper and reconciler."""

    max_attempts: int = Field(default=MAX_ATTEMPTS, ge=1, description="attempts before a job whose workers die fails")
    queued_redrive_seconds: int = Field(default=Timings().queued_redrive_seconds, ge=1)
    max_redrives: int = Field(
        default=5, ge=0, description="re-sends of a queued job's message before it fails `queue_timeout`"
    )


class ScalerSettings(EnvSettings):
    pools: list[Pool] = Field(min_length=1)
    worker_name_prefix: str = Field(default=WORKER_NAME_PREFIX, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    lease_table: str | None = Field(
        default=None,
        description="the jobs table, where the scaler's lease (`scaler#lock`) lives; None: no lease (one process "
        "runs the scaler, as in the local stack)",
    )
    coalesce_seconds: float = Field(
        default=10, ge=0, le=60, description="runs start at least this far apart; wakes in between join the next"
    )
    lease_seconds: int = Field(
        default=90,
        ge=10,
        le=900,
        description="a run that died stops holding the lease after this long (> the function timeout)",
    )
    spot_fallback_seconds: int = Field(
        default=600,
        ge=0,
        description="workers RUNNABLE this long on a pool's Spot path move to its on-demand queue; 0: never",
    )
    start_backoff_seconds: int = Field(
        default=60,
        ge=0,
        description="after a worker that could not start (WorkerExit), the pool starts none for this long, doubled "
        "for each further one; 0: never held back",
    )
    start_backoff_max_seconds: int = Field(
        default=1800, ge=1, description="the longest a pool whose workers cannot start is held back at once"
    )

    @property
    def start_backoff(self) -> tuple[float, float] | None:
        """(base, most) for BatchCompute, None when off."""
        if not self.start_backoff_seconds:
            return None
        return float(self.start_backoff_seconds), float(max(self.start_backoff_seconds, self.start_backoff_max_seconds))

    @model_validator(mode="after")
    def _lease_outlasts_a_window(self) -> Self:
        if self.lease_seconds <= self.coalesce_seconds:
            raise ValueError("lease_seconds must be longer than coalesce_seconds")
        return self


class NotifySettings(EnvSettings):
    event_bus_name: str = "default"
    webhooks_queue_url: str | None = Field(default=None, description="where finished jobs with a callback go")
    table_name: str | None = Field(default=None, description="where the operator's hourly counters are ADDed")
    routing: RoutingSettings | None = Field(default=None, description="which pool a job runs on (its metrics' pool)")
    default_model: str | None = Field(default=None, description="the GPU pool's model (a job without options.model)")


class WebhookSettings(StoreSettings):
    """The webhook sender: one signed POST per finished job that asked for a callback."""

    signing_secret_arn: str | None = Field(default=None, description="the Secrets Manager secret that signs")
    signing_secret: str | None = Field(default=None, description="the secret itself (local stack only)")
    callback_max_attempts: int = Field(default=8, ge=1, le=20, description="deliveries tried before a callback fails")
    callback_retry_seconds: int = Field(
        default=30, ge=1, description="wait after the first failed try; doubles each try (at most 12 h)"
    )
    callback_timeout_seconds: float = Field(default=10, gt=0, le=60, description="connect + read time a receiver gets")
    allow_private: bool = Field(default=False, description="http:// and private addresses (local stack only)")


class WorkerSettings(StoreSettings):
    jobs_queue_url: str = Field(min_length=1)
    class_queue_urls: dict[Priority, str] = Field(
        default_factory=dict,
        description="the pool's other priority classes' queues (`high`, `low`); `normal` is the main queue",
    )
    engine: EngineName = "faster-whisper"
    model: str = "tiny.en"
    model_path: str | None = Field(default=None, description="an explicit model folder for `model`")
    model_dir: str | None = Field(default=None, description="where the image baked its models")
    cache_dir: str | None = Field(default=None, description="converted checkpoints (default ~/.cache/batchscribe)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"
    cpu_threads: int = Field(default=0, ge=0)
    cpu_lanes: int = Field(
        default=0, ge=0, description="faster-whisper on a CPU: model replicas sharing a batch; 0: the engine's default"
    )
    beam_size: int = Field(default=5, ge=1, le=10)
    allow_download: bool = False
    max_jobs: int = Field(default=0, ge=0, description="exit after this many jobs; 0: no cap")
    max_attempts: int = Field(
        default=MAX_ATTEMPTS, ge=1, description="a transient failure of the last attempt fails the job, with its cause"
    )
    max_running_per_owner: int = Field(
        default=0, ge=0, description="running jobs per owner across all workers; over it jobs stay queued; 0: no cap"
    )
    owner_cap_delay_seconds: int = Field(
        default=30, ge=0, le=900, description="a job over its owner's cap is looked at again after this long"
    )
    max_duration_seconds: float = Field(default=4 * 3600, gt=0)
    # cross-job batching: the worker holds up to K claimed jobs and runs their 30 s windows
    # in shared batches of up to B (0: chosen from the device and the model)
    max_held_jobs: int = Field(default=0, ge=0, description="K: jobs held at once; 1 runs one job at a time")
    batch_size: int = Field(default=0, ge=0, description="B: windows per batch")
    read_ahead: int = Field(default=8, ge=1, description="decoded windows buffered per held job")
    decode_block_seconds: float = Field(default=120, ge=64, description="audio decoded per step, per job")
    # the disk budget (gpu_container/worker/disk.py): held jobs' inputs fit the work folder's free disk
    work_dir: str | None = Field(default=None, description="where jobs' files go (default: the system temp folder)")
    disk_floor_mb: int = Field(default=1024, ge=0, description="free disk the worker keeps for itself (MiB)")
    max_input_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="the largest input a job of this pool may have (its uploads' cap): the worker receives only "
        "while its free disk takes one more of that size",
    )
    timings: Timings = Field(default_factory=Timings)
    worker_id: str | None = Field(default=None, description="default: the Batch job id, else host-pid")
    instance_hourly_usd: float | None = Field(
        default=None, ge=0, description="the pool's price per worker-hour: a job costs compute_seconds x this / 3600"
    )
    # input by URL (batchscribe.sources): the fetch's limits
    source_timeout_seconds: float = Field(default=30, gt=0, le=300, description="to connect, and between reads")
    source_max_seconds: float = Field(default=1800, gt=0, description="the longest a source URL's transfer may take")
    allow_private: bool = Field(default=False, description="http:// and private source URLs (local stack only)")

    @property
    def worker_name(self) -> str:
        return self.worker_id or os.environ.get("AWS_BATCH_JOB_ID") or f"{socket.gethostname()}-{os.getpid()}"


class ClientSettings(EnvSettings):
    """The CLI's defaults (`--api` and `--owner` override them)."""

    api: str | None = Field(default=None, description="the API's base URL")
    owner: str | None = Field(default=None, description="local stack only: the caller to act as")
    progress: bool = Field(default=False, description="draw progress bars even when stderr is not a terminal")


# process -> its settings model (the stack and the local stack check each process's
# environment against this; each runtime imports its own model directly)
PROCESS_SETTINGS: dict[str, type[EnvSettings]] = {
    "api": ApiSettings,
    "on_upload": IntakeSettings,
    "dead_letter": LifecycleSettings,
    "sweeper": LifecycleSettings,
    "reconciler": LifecycleSettings,
    "scaler": ScalerSettings,
    "notify": NotifySettings,
    "webhook": WebhookSettings,
    "worker": WorkerSettings,
}


def powertools_env(log_level: str = "INFO") -> dict[str, str]:
    """Powertools' own variables (its names, not ours), the same for every process."""
    return {
        "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": log_level,
    }
