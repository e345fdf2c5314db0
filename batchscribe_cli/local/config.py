"""What a local stack is asked to be (`LocalConfig`), and each process's settings written from
it: the same settings models the CDK stack writes each function's and the worker's environment
from, so a name is typed once."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from batchscribe.models import EngineName
from batchscribe.scaler import Pool
from batchscribe.settings import (
    ApiSettings,
    EnvSettings,
    IntakeSettings,
    LifecycleSettings,
    NotifySettings,
    RoutingSettings,
    ScalerSettings,
    Timings,
    WebhookSettings,
    WorkerSettings,
)
from batchscribe_cli.local.datadir import default_data_dir
from batchscribe_cli.provision import Provisioned
from stacks.sizing import held_jobs


@dataclass
class LocalConfig:
    port: int = 8000
    max_workers: int = 2
    data_dir: Path = field(default_factory=default_data_dir)  # one per user, not the current folder
    engine: EngineName = "faster-whisper"
    model: str = "tiny.en"
    # the workers' device: cuda proves the GPU before the first claim (and exits if it fails),
    # auto takes it only when it passes, else the CPU
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    jobs_per_worker: int = 1
    timings: Timings = field(default_factory=Timings.local)
    max_upload_bytes: int = 200 * 1024 * 1024
    multipart_part_bytes: int = ApiSettings.model_fields["multipart_part_bytes"].default  # S3: >= 5 MiB
    quiet: bool = False
    worker_image: str | None = None  # run workers from this image (podman) instead of this checkout
    save_every_seconds: float = 30  # the state is also saved at stop (data_dir/state)
    worker_held_jobs: int = 0  # K: jobs one worker holds at once (0: the worker's default for its device)
    worker_batch_size: int = 0  # B: windows per batch (0: the worker's default)
    worker_cpu_lanes: int = 0  # faster-whisper's CPU lanes (0: the engine's default)
    high_priority_owners: list[str] | None = None  # ARNs (local: owner_arn(name)); None: everyone
    create_rate_limit: int = 0  # creates per owner per window; 0: no limit
    create_rate_window_seconds: int = 60
    max_running_per_owner: int = 0  # running jobs per owner; 0: no cap
    owner_cap_delay_seconds: int = 2  # a job over its owner's cap is looked at again after this long
    # every component's AWS calls checked against the IAM policy the CDK stack synthesizes for
    # its role (batchscribe_cli/local/iam.py); False only to debug something else
    iam: bool = True
    policies: Path | None = None  # another policies.json than the committed one (tests)
    # callers (X-Batchscribe-Owner) that hold the stats policy (GET /admin/stats) besides the
    # invoke policy every caller holds; the CLI's own identity is `local`
    stats_owners: list[str] = field(default_factory=lambda: ["local"])


def webhook_secret(data_dir: Path) -> str:
    """The secret that signs a stack's callbacks: made once, kept in the data folder
    (`DATA_DIR/webhook-secret`), so that a receiver keeps verifying across restarts."""
    path = data_dir / "webhook-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def process_settings(cfg: LocalConfig, r: Provisioned) -> dict[str, EnvSettings]:
    """Each process's settings, from the same models the CDK stack writes them from."""
    store = {"table_name": r.table, "bucket_name": r.bucket}
    classes = dict(r.class_queue_urls)
    lifecycle = LifecycleSettings(
        **store,
        jobs_queue_url=r.jobs_queue_url,
        class_queue_urls=classes,
        queued_redrive_seconds=cfg.timings.queued_redrive_seconds,
    )
    routing = RoutingSettings(jobs_queue_url=r.jobs_queue_url, class_queue_urls=classes)
    return {
        "api": ApiSettings(
            **store,
            max_upload_bytes=cfg.max_upload_bytes,
            multipart_part_bytes=cfg.multipart_part_bytes,
            upload_window_seconds=cfg.timings.upload_window_seconds,
            result_url_seconds=cfg.timings.result_url_seconds,
            default_model=cfg.model,
            default_pool=_pool(cfg, r).name,  # the local stack's one pool: workers on this machine
            allow_private=True,  # callbacks to http:// and this machine's receivers
            high_priority_owners=cfg.high_priority_owners,
            create_rate_limit=cfg.create_rate_limit,
            create_rate_window_seconds=cfg.create_rate_window_seconds,
            routing=routing,
        ),
        # events on moto's default bus; the operator's counters in the jobs table
        "notify": NotifySettings(
            webhooks_queue_url=r.webhooks_queue_url, table_name=r.table, routing=routing, default_model=cfg.model
        ),
        "webhook": WebhookSettings(**store, signing_secret=webhook_secret(cfg.data_dir), allow_private=True),
        "on_upload": IntakeSettings(
            **store, jobs_queue_url=r.jobs_queue_url, class_queue_urls=classes, max_upload_bytes=cfg.max_upload_bytes
        ),
        "dead_letter": lifecycle,
        "sweeper": lifecycle,
        "reconciler": lifecycle,
        # the lease as deployed (so its calls are checked against the scaler's grants), on local
        # timings: a stack stopped mid-run holds it for 10 s at most after a restart
        "scaler": ScalerSettings(pools=[_pool(cfg, r)], lease_table=r.table, coalesce_seconds=1, lease_seconds=10),
        "worker": _worker(cfg, r),
    }


def _pool(cfg: LocalConfig, r: Provisioned) -> Pool:
    return Pool(
        name="cpu",
        queue_url=r.jobs_queue_url,
        class_queue_urls=dict(r.class_queue_urls),
        max_workers=cfg.max_workers,
        jobs_per_worker=cfg.jobs_per_worker,
        # the K each worker holds: a running worker's free slots take new jobs before new workers do
        held_jobs=cfg.worker_held_jobs or held_jobs("gpu" if cfg.device == "cuda" else "cpu", cfg.model),
    )


def _worker(cfg: LocalConfig, r: Provisioned) -> WorkerSettings:
    return WorkerSettings(
        table_name=r.table,
        bucket_name=r.bucket,
        jobs_queue_url=r.jobs_queue_url,
        class_queue_urls=dict(r.class_queue_urls),
        engine=cfg.engine,
        model=cfg.model,
        device=cfg.device,
        cpu_threads=2,
        cpu_lanes=cfg.worker_cpu_lanes,
        # an image brings its own model and cache folders (baked at build time)
        cache_dir=None if cfg.worker_image else str((cfg.data_dir / "cache").resolve()),
        timings=cfg.timings,
        max_held_jobs=cfg.worker_held_jobs,
        batch_size=cfg.worker_batch_size,
        max_running_per_owner=cfg.max_running_per_owner,
        owner_cap_delay_seconds=cfg.owner_cap_delay_seconds,
        allow_private=True,  # source URLs on this machine (a presigned moto URL is http://127.0.0.1)
    )
