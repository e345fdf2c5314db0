"""The shape and names of the service's AWS resources, in one place, as plain data.

The CDK constructs (stacks/) and the local stack (which makes the same resources in moto)
both read these definitions, so the two cannot drift apart: one table schema, one set of
queue attributes, one event name (the S3 key layout, the notification prefix included, is
batchscribe.keys). This module imports neither boto3 nor anything that does: the CDK app
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# ---- the jobs table ----------------------------------------------------------------------
TABLE_KEY = "job_id"
SCALER_LEASE = "scaler"  # the scaler's run lease: the item `scaler#lock` of the jobs table


def lease_item_id(name: str) -> str:
    """The key of a singleton task's lease item (what an IAM condition on the table's leading
    key names: the scaler may write this item and no other)."""
    return f"{name}#lock"


TTL_ATTRIBUTE = "ttl"
# the operator's hourly counters (batchscribe.repository.stats): items `stats#<hour>`, kept this
# long after their hour (the longest window `batchscribe stats --since` reads is STATS_MAX_HOURS)
STATS_ITEM_PREFIX = "stats#"
STATS_MAX_HOURS = 30 * 24
STATS_KEEP_SECONDS = (STATS_MAX_HOURS + 48) * 3600
STATS_DEFAULT_HOURS = 24  # the window `batchscribe stats` (GET /admin/stats) reads unless told
STATS_DEFAULT_OLDEST, STATS_MAX_OLDEST = 10, 100  # how many of the oldest waiting jobs it lists
# the operator's statistics route: only principals granted the stats policy may call it (the
# invoke policy every caller gets covers the job routes, not this one)
ADMIN_STATS_PATH = "/admin/stats"
API_STAGE = "v1"  # the REST API's stage (its URL path and execute-api ARNs)
OWNER_INDEX = "by_owner"  # the caller's jobs, newest first
SWEEP_INDEX = "by_sweep"  # sparse: jobs that can go stale (open upload windows, leases, queued waits)
# index name -> (partition key, type, sort key, type)
TABLE_INDEXES: dict[str, tuple[str, str, str, str]] = {
    OWNER_INDEX: ("owner", "S", "created_at", "S"),
    SWEEP_INDEX: ("sweep_status", "S", "sweep_at", "N"),
}
# index name -> the non-key attributes it carries (None: every attribute; else an INCLUDE
# projection). The sweep index carries only what is read from it or filtered on there (a queued
# job's priority, a running job's worker, an owner's slot item's job ids): a heartbeat changes a
# running job's lease, progress and updated_at, none of them in it, so a beat writes no entry.
INDEX_ATTRIBUTES: dict[str, tuple[str, ...] | None] = {
    OWNER_INDEX: None,
    SWEEP_INDEX: ("priority", "worker", "jobs"),
}
# Running jobs' sweep index entries are spread over this many partitions (`running#0` ...), by
# job id: no one index partition takes the writes of every running job (~1,000 WRU/s each).
RUNNING_SWEEP_SHARDS = 8

# ---- queues (visibility timeouts are timings: batchscribe.settings.Timings) ---------------
JOBS_MAX_RECEIVE_COUNT = 5
UPLOADS_MAX_RECEIVE_COUNT = 5
RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600

# ---- priority classes: one queue (+ DLQ) per class per pool; `normal` is the pool's main queue.
# Workers receive high first, but a lower class is passed over at most this many receives in a
# row while it has messages (about 6:3:1 under load on every class): nothing starves.
PASS_OVER_LIMIT = {"normal": 2, "low": 9}
# The scaler's view: backlog of a class counts this much towards the workers it starts.
SCALE_WEIGHTS = {"high": 2.0, "normal": 1.0, "low": 0.5}

# ---- events ----------------------------------------------------------------------------
EVENT_SOURCE = "batchscribe"
DETAIL_TYPE = "Job Status Change"
# the jobs table's stream -> notify: records per invocation, and retries of a failing batch
# (bisected on error) before it is left behind (deployed: to the Failures queue)
NOTIFY_BATCH_SIZE = 100
NOTIFY_RETRY_ATTEMPTS = 5

# ---- workers ---------------------------------------------------------------------------
WORKER_NAME_PREFIX = "batchscribe-worker"


class WorkerExit(IntEnum):
    """How a worker process ends: its container's exit code, which Batch records on its job.

    A worker that cannot start exits before it claims anything (no job spends an attempt on
    it), with one log line naming the cause and what to do, whose `event` field is
    `WORKER_NOT_STARTED` (the alarm's metric filter matches it, stacks/constructs/monitoring.py).
    The job definition never retries these (stacks/constructs/compute.py): the host would only
    fail the same way again. Codes from sysexits.h."""

    DONE = 0  # idle, at its job cap, or stopped (SIGTERM): every job finished or given back
    DEVICE = 69  # EX_UNAVAILABLE: the GPU failed its preflight (driver, device, engine build, kernel)
    ENGINE = 70  # EX_SOFTWARE: the engine could not load the pool's model
    CONFIG = 78  # EX_CONFIG: the job definition's environment is wrong

    @property
    def meaning(self) -> str:
        return _EXIT_MEANINGS[self]


_EXIT_MEANINGS = {
    WorkerExit.DONE: "done",
    WorkerExit.DEVICE: "its GPU failed the preflight",
    WorkerExit.ENGINE: "its engine could not load the model",
    WorkerExit.CONFIG: "its settings are wrong",
}
# the exits of a worker that stopped before its first claim
WORKER_CANNOT_START = (WorkerExit.DEVICE, WorkerExit.ENGINE, WorkerExit.CONFIG)
WORKER_NOT_STARTED = "worker_not_started"  # the `event` field of that one log line

# ---- the GPU driver's JIT cache -------------------------------------------------------------
# A GPU without code of its own in the engine's build (an H100 with CTranslate2 4.8.5: PTX for
# sm_86 only) runs kernels the driver compiles from PTX at first use, and caches them where
# NVIDIA's CUDA_CACHE_PATH says (default ~/.nv/ComputeCache: in a fresh container, lost with it).
# The stack keeps the cache on the instance's disk, mounted into every GPU worker container, so
# a host compiles once, not once per worker. The driver's own variables (CUDA C++ Programming
# Guide, "CUDA Environment Variables"), written by `cuda_cache_env`:
CUDA_CACHE_PATH_ENV = "CUDA_CACHE_PATH"
CUDA_CACHE_MAXSIZE_ENV = "CUDA_CACHE_MAXSIZE"
CUDA_CACHE_HOST_DIR = "/var/cache/batchscribe/cuda"  # on the instance's root volume
CUDA_CACHE_MOUNT = "/var/cache/cuda"  # where a worker container sees it
CUDA_CACHE_MAX_BYTES = 4 * 1024**3  # the most the driver takes (its default is far smaller)


def cuda_cache_env(path: str) -> dict[str, str]:
    """A worker's environment for a JIT cache in `path`."""
    return {CUDA_CACHE_PATH_ENV: path, CUDA_CACHE_MAXSIZE_ENV: str(CUDA_CACHE_MAX_BYTES)}


@dataclass(frozen=True)
class Names:
    """Physical names for a deployment prefix. The local stack and the tests use these; the
    CDK stack lets CloudFormation name things and passes the names through the environment."""

    prefix: str = "batchscribe"

    @property
    def table(self) -> str:
        return f"{self.prefix}-jobs"

    @property
    def bucket(self) -> str:
        return f"{self.prefix}-media"

    @property
    def jobs_queue(self) -> str:
        return f"{self.prefix}-jobs"

    @property
    def jobs_dlq(self) -> str:
        return f"{self.prefix}-jobs-dlq"

    def class_queue(self, priority: str) -> str:
        """A priority class's jobs queue (the main jobs queue is `normal`'s)."""
        return self.jobs_queue if priority == "normal" else f"{self.prefix}-jobs-{priority}"

    def class_dlq(self, priority: str) -> str:
        return self.jobs_dlq if priority == "normal" else f"{self.prefix}-jobs-{priority}-dlq"

    @property
    def uploads_queue(self) -> str:
        return f"{self.prefix}-uploads"

    @property
    def uploads_dlq(self) -> str:
        return f"{self.prefix}-uploads-dlq"

    @property
    def webhooks_queue(self) -> str:
        return f"{self.prefix}-webhooks"

    @property
    def webhooks_dlq(self) -> str:
        return f"{self.prefix}-webhooks-dlq"


# ---- the HTTP API's CORS (API Gateway answers preflights; the API function and the gateway's
# own error responses add the allow-origin header to every answer) --------------------------
CORS_ALLOW_METHODS = ("GET", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = (
    "Content-Type",
    "Authorization",
    "X-Amz-Date",
    "X-Amz-Security-Token",
    "X-Amz-Content-Sha256",
    "Idempotency-Key",
)
CORS_EXPOSE_HEADERS = ("Idempotent-Replayed",)
# ... and the media bucket's, for a browser (the web console): it uploads with the presigned
# POST or PUTs parts (reading each part's ETag to complete them) and reads results and its input
BUCKET_CORS_METHODS = ("POST", "PUT", "GET")
BUCKET_CORS_ALLOW_HEADERS = ("*",)
BUCKET_CORS_EXPOSE_HEADERS = ("ETag",)
BUCKET_CORS_MAX_AGE_SECONDS = 3000


def console_csp(connect: str, media: str) -> str:
    """The web console's Content-Security-Policy, deployed (CloudFront) and local alike: the
    site's own script and style only; calls to its own origin and `connect`; audio from `media`;
    no framing, no forms, no plugins."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {connect}; media-src {media}; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )


def cors_headers(request_origin: str | None, allowed_origins: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The CORS headers for an answer to a request from `request_origin` (none when the
    origin is not allowed, or the request is not a browser's cross-origin one)."""
    if "*" in allowed_origins:
        origin = "*"
    elif request_origin and request_origin in allowed_origins:
        origin = request_origin
    else:
        return {}
    headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": ",".join(CORS_EXPOSE_HEADERS)}
    if origin != "*":
        headers["Vary"] = "Origin"
    return headers
