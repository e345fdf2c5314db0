"""The whole pipeline on one machine: `batchscribe local up`.

- moto in server mode on 127.0.0.1 for S3, SQS and DynamoDB, provisioned from the same
  declarations (`batchscribe.resources`, the timings) the CDK stack reads, notification included;
- each process's environment written from the same settings models the CDK stack uses;
- an HTTP server on 127.0.0.1 that turns requests into API Gateway proxy events for the real
  API Lambda handler (header `X-Batchscribe-Owner` stands in for the IAM caller);
- event-source emulation: the uploads queue -> on_upload, the jobs DLQ -> dead_letter, with real
  SQS batch events; the scaler and the sweeper on their schedules; a worker that ends -> the
  reconciler (Batch's job state change event);
- a local compute backend behind the scaler's Compute interface: worker processes (the real
  worker program, CPU, tiny.en) that exit when idle, so scale-from-zero-and-back is visible;
- the emulated state kept in the data folder (`Snapshot`): saved every half minute and at stop,
  restored at start, so stopping the stack loses no job, transcript or upload;
- memory that stays flat for hours: the loops read only the jobs that can still change, the
  references moto keeps to every object it ever made are dropped, and the threads share two
  malloc arenas (`make soak` measures it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from batchscribe import aws
from batchscribe.models import JobMessage, MessageReason
from batchscribe.queue import JobQueue
from batchscribe.repository import JobRepository
from batchscribe.resources import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, Names, cors_headers
from batchscribe.scaler import Pool
from batchscribe.settings import (
    ENV_PREFIX,
    ApiSettings,
    ClientSettings,
    EnvSettings,
    IntakeSettings,
    LifecycleSettings,
    RoutingSettings,
    ScalerSettings,
    Timings,
    WebhookSettings,
    WorkerSettings,
    powertools_env,
)
from batchscribe_cli import moto_atomic
from batchscribe_cli.client import OWNER_HEADER
from batchscribe_cli.provision import Provisioned, provision

LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
REPO_ROOT = Path(__file__).resolve().parent.parent  # the tree this local stack runs from
_OWNER = re.compile(r"^[A-Za-z0-9_.@+=-]{1,64}$")
# the Lambda handlers the local stack runs in its own process
IN_PROCESS = ("api", "on_upload", "dead_letter", "sweeper", "reconciler", "scaler", "webhook")


def owner_arn(owner: str) -> str:
    return f"arn:aws:iam::{LOCAL_ACCOUNT}:user/{owner}"


@dataclass
class LocalConfig:
    port: int = 8000
    max_workers: int = 2
    data_dir: Path = field(default_factory=lambda: Path(".local-data"))
    engine: Literal["faster-whisper", "openai-whisper"] = "faster-whisper"
    model: str = "tiny.en"
    jobs_per_worker: int = 1
    timings: Timings = field(default_factory=Timings.local)
    max_upload_bytes: int = 200 * 1024 * 1024
    quiet: bool = False
    worker_image: str | None = None  # run workers from this image (podman) instead of this checkout
    save_every_seconds: float = 30  # the state is also saved at stop (data_dir/state)
    worker_held_jobs: int = 0  # K: jobs one worker holds at once (0: the worker's default for its device)
    worker_batch_size: int = 0  # B: windows per batch (0: the worker's default)
    high_priority_owners: list[str] | None = None  # ARNs (local: owner_arn(name)); None: everyone
    create_rate_limit: int = 0  # creates per owner per window; 0: no limit
    create_rate_window_seconds: int = 60
    max_running_per_owner: int = 0  # running jobs per owner; 0: no cap
    owner_cap_delay_seconds: int = 2  # a job over its owner's cap is looked at again after this long


def merged_env(*parts: dict[str, str]) -> dict[str, str]:
    """One environment from several processes' settings; a name may not mean two things."""
    out: dict[str, str] = {}
    for part in parts:
        for k, v in part.items():
            if out.get(k, v) != v:
                raise ValueError(f"{k} would be both {out[k]!r} and {v!r}")
            out[k] = v
    return out


class LocalContext:
    """The Lambda context the in-process handlers get (the tests and benchmarks use it too)."""

    function_name = "local"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:{LOCAL_ACCOUNT}:function:local"
    aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _no_metric(*_: Any, **__: Any) -> None:
    return None


def one_at_a_time(handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
    """A handler that takes one event at a time, however many threads call it."""
    lock = threading.Lock()

    @functools.wraps(handler)
    def serialised(event: dict[str, Any], context: Any) -> Any:
        with lock:
            return handler(event, context)

    return serialised


def _drop_metrics(module: Any) -> None:
    """CloudWatch is not emulated here. Powertools keeps one metric set per process and
    empties it when a Lambda invocation ends; with every handler in this one process, and
    metrics off, it would only fill up (and print itself at 100 values, from any thread).
    The local stack's handlers record none."""
    metrics = getattr(module, "metrics", None)
    if metrics is not None:
        metrics.add_metric = _no_metric


def proxy_event(
    method: str,
    path: str,
    *,
    user_arn: str | None,
    caller: str | None = None,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, list[str]] | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """An API Gateway REST proxy event as the IAM-authorized API delivers it: the caller's
    identity in `requestContext.identity` (no `userArn` when the request was not signed), each
    header and query parameter in both forms (the single form holds the last value)."""
    headers = headers or {}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": "local",
            "stage": "local",
            "requestId": uuid.uuid4().hex,
            "httpMethod": method,
            "path": path,
            "resourcePath": path,
            "identity": {"userArn": user_arn, "caller": caller or user_arn, "sourceIp": source_ip},
        },
        "body": body,
        "isBase64Encoded": False,
    }


def json_request(
    method: str,
    path: str,
    body: Any = None,
    *,
    user_arn: str | None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A JSON request to the API as its proxy event (the tests and the API benchmark call the
    handler with these): a body that is not a string is serialised, each query parameter given once."""
    return proxy_event(
        method,
        path,
        user_arn=user_arn,
        body=body if isinstance(body, str) or body is None else json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
        query={k: [v] for k, v in query.items()} if query else None,
    )


def sqs_event(
    messages: list[dict[str, Any]], queue_arn: str = f"arn:aws:sqs:us-east-1:{LOCAL_ACCOUNT}:queue"
) -> dict[str, Any]:
    """The event Lambda's SQS event source delivers for ReceiveMessage results (tests pass
    bodies alone; the id and handle are then made up)."""
    return {
        "Records": [
            {
                "messageId": m.get("MessageId") or str(uuid.uuid4()),
                "receiptHandle": m.get("ReceiptHandle", "rh"),
                "body": m["Body"],
                "attributes": {k: str(v) for k, v in m.get("Attributes", {"ApproximateReceiveCount": 1}).items()},
                "messageAttributes": {},
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


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
                worker_id = f"local-{uuid.uuid4().hex[:12]}"
                log = (self.log_dir / f"worker-{int(time.time() * 1000)}-{self.started}.log").open("ab")
                argv, env = self.command(worker_id)
                proc = subprocess.Popen(
                    argv,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                log.close()
                self.procs[proc.pid] = (worker_id, proc)
                self.started += 1
            self.peak = max(self.peak, len(self.procs))
            self.say(f"scaler: started {count} worker(s); {len(self.procs)} running")

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


class Snapshot:
    """The emulated data plane kept in the data folder, so that stopping the local stack loses
    nothing: the jobs table's items (DynamoDB JSON) and the bucket's objects (uploads,
    transcripts, logs), written at every `every` seconds and at stop, put back at start.

    Queue messages are not kept: they are derived from the jobs. At start, every queued job's
    message is sent again and every running job (its worker is gone) is requeued, which is
    what the sweeper's redrive and the reconciler would do, only at once. moto has no
    persistence of its own (its state lives in the process), hence this."""

    def __init__(self, folder: Path, table: str, bucket: str) -> None:
        self.folder = folder
        self.table = table
        self.bucket = bucket
        self._lock = threading.Lock()

    @property
    def objects(self) -> Path:
        return self.folder / "s3"

    def _index(self) -> dict[str, dict[str, Any]]:
        path = self.objects / "index.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        """Atomically: a reader (or a crash) sees the old file or the new one, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def save(self) -> tuple[int, int]:
        """(items, objects) written; objects already saved with the same ETag are not read again."""
        with self._lock:
            ddb, s3 = aws.client("dynamodb"), aws.client("s3")
            items = [
                item for page in ddb.get_paginator("scan").paginate(TableName=self.table) for item in page["Items"]
            ]
            old, index = self._index(), {}
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
                for obj in page.get("Contents", []):
                    key, etag = obj["Key"], obj["ETag"]
                    name = hashlib.sha256(key.encode()).hexdigest()
                    saved = old.get(key)
                    if saved and saved["etag"] == etag and (self.objects / name).exists():
                        index[key] = saved
                        continue
                    resp = s3.get_object(Bucket=self.bucket, Key=key)
                    self._write(self.objects / name, resp["Body"].read())
                    index[key] = {"file": name, "etag": etag, "content_type": resp.get("ContentType")}
            for gone in {v["file"] for v in old.values()} - {v["file"] for v in index.values()}:
                (self.objects / gone).unlink(missing_ok=True)
            self._write(self.objects / "index.json", json.dumps(index).encode())
            self._write(self.folder / "dynamodb.json", json.dumps(items).encode())
            return len(items), len(index)

    def restore(self) -> tuple[int, int]:
        """(items, objects) put back into a freshly provisioned table and bucket. Objects under
        uploads/ notify the intake again, which finds their jobs past pending (a duplicate) or
        queues a job whose upload had not been taken in yet."""
        table = self.folder / "dynamodb.json"
        if not table.exists():
            return 0, 0
        ddb, s3 = aws.client("dynamodb"), aws.client("s3")
        items = json.loads(table.read_text())
        for i in range(0, len(items), 25):
            batch = {self.table: [{"PutRequest": {"Item": item}} for item in items[i : i + 25]]}
            while batch:
                batch = ddb.batch_write_item(RequestItems=batch).get("UnprocessedItems") or {}
        index = self._index()
        for key, saved in index.items():
            extra = {"ContentType": saved["content_type"]} if saved.get("content_type") else {}
            s3.put_object(Bucket=self.bucket, Key=key, Body=(self.objects / saved["file"]).read_bytes(), **extra)
        return len(items), len(index)


def limit_malloc_arenas(count: int = 2) -> bool:
    """glibc gives threads that allocate their own malloc arenas (up to 8 per core) and hands
    little of what is freed in them back to the system, so a process that serves each request
    on a new thread (moto's server, the API's HTTP server) creeps up in resident memory while
    its Python heap stays flat (measured here: +2.9 MB/min at a job a second; flat with two
    arenas). What MALLOC_ARENA_MAX does when set before start; a no-op off glibc."""
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, count))  # M_ARENA_MAX
    except (OSError, AttributeError):
        return False


class LocalStack:
    def __init__(self, config: LocalConfig | None = None, say: Callable[[str], None] | None = None) -> None:
        self.config = config or LocalConfig()
        self._say = say or (lambda line: print(line, flush=True))
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.moto: Any = None
        self.http: ThreadingHTTPServer | None = None
        self.resources: Provisioned | None = None
        self.compute: LocalCompute | None = None
        self.settings: dict[str, EnvSettings] = {}
        self.handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
        self.url = ""
        self.transitions: deque[tuple[str, str, str]] = deque(maxlen=10_000)  # (job, before, after)
        self._seen: dict[str, str] = {}
        self.stopping_requested = threading.Event()
        self._saved_env: dict[str, str | None] = {}
        self.snapshot: Snapshot | None = None

    def say(self, line: str) -> None:
        if not self.config.quiet:
            self._say(f"{time.strftime('%H:%M:%S')} {line}")

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalStack:
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        limit_malloc_arenas()  # before the servers' threads start
        moto_atomic.apply()
        cfg, t = self.config, self.config.timings
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        (cfg.data_dir / "workers").mkdir(exist_ok=True)
        state = cfg.data_dir / "state"
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self._moto_port(state), verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto's backends are per process, not per server: a stack started again in the same
        # process (tests, benchmarks) begins empty
        import requests

        requests.post(f"{endpoint}/moto-api/reset", timeout=30).raise_for_status()
        aws_env = {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_REGION": LOCAL_REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self._set_env(aws_env)
        aws.reset()
        self.resources = r = provision(boto3.Session(), Names(prefix="batchscribe-local"), t, LOCAL_REGION)
        self.settings = self.process_settings(r)
        self._write_port(state, port)
        self.snapshot = Snapshot(state, r.table, r.bucket)
        restored = self.snapshot.restore()

        # The Lambda handlers run in this process: one environment for all of them.
        self._set_env(
            merged_env(
                *(self.settings[name].to_env() for name in IN_PROCESS),
                powertools_env(log_level="WARNING"),
                {"POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_METRICS_DISABLED": "true"},
            )
        )
        aws.reset()
        # Import every handler before any thread runs: concurrent first imports of the same
        # library (Powertools) from several threads can see half-initialised modules.
        modules = {name: importlib.import_module(f"lambdas.{name}.handler") for name in IN_PROCESS}
        # One event at a time per handler, as one Lambda environment runs them: Powertools keeps
        # the current event and context on shared router and processor objects.
        self.handlers = {name: one_at_a_time(module.handler) for name, module in modules.items()}
        for module in modules.values():
            _drop_metrics(module)
        # with none recorded, Powertools warns at the end of every invocation: a log line on
        # Lambda, but here it would print on the user's terminal at every call
        warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", ENV_PREFIX, "POWERTOOLS_"))}
        worker_settings = self.settings["worker"]
        assert isinstance(worker_settings, WorkerSettings)
        self.compute = LocalCompute(
            worker_settings,
            {**({} if cfg.worker_image else inherited), **aws_env, **powertools_env(), "PYTHONUNBUFFERED": "1"},
            cfg.data_dir / "workers",
            self.say,
            on_exit=self._worker_exited,
            image=cfg.worker_image,
        )

        if any(restored):
            self.say(f"restored {restored[0]} records and {restored[1]} files from {state}")
            self._recover()

        self.http = _ApiServer(("127.0.0.1", cfg.port), _handler_class(self))
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread("api", self.http.serve_forever)
        self._thread("uploads", lambda: self._poll(r.uploads_queue_url, self.handlers["on_upload"]))
        for i, dlq_url in enumerate(r.all_jobs_dlq_urls):  # one per priority class
            self._thread(f"dead-letters-{i}", functools.partial(self._poll, dlq_url, self.handlers["dead_letter"]))
        self._thread("webhooks", lambda: self._poll(r.webhooks_queue_url, self.handlers["webhook"]))
        self._thread("scaler", lambda: self._every(t.scale_every_seconds, self._scale))
        self._thread("sweeper", lambda: self._every(t.sweep_every_seconds, self._sweep))
        self._thread("transitions", lambda: self._every(0.3, self._watch))
        self._thread("moto-references", lambda: self._every(5, self._forget_moto_instances))
        self._thread("state", lambda: self._every(cfg.save_every_seconds, self._save))
        where = f"from image {cfg.worker_image}" if cfg.worker_image else "on CPU"
        self.say(
            f"local stack up: API {self.url} (moto {endpoint}); up to {cfg.max_workers} worker(s), "
            f"{cfg.engine}/{cfg.model} {where}; worker logs in {cfg.data_dir / 'workers'}"
        )
        return self

    def process_settings(self, r: Provisioned) -> dict[str, EnvSettings]:
        """Each process's settings, from the same models the CDK stack writes them from."""
        cfg, t = self.config, self.config.timings
        store = {"table_name": r.table, "bucket_name": r.bucket}
        classes = dict(r.class_queue_urls)
        lifecycle = LifecycleSettings(
            **store,
            jobs_queue_url=r.jobs_queue_url,
            class_queue_urls=classes,
            queued_redrive_seconds=t.queued_redrive_seconds,
        )
        return {
            "api": ApiSettings(
                **store,
                max_upload_bytes=cfg.max_upload_bytes,
                upload_window_seconds=t.upload_window_seconds,
                result_url_seconds=t.result_url_seconds,
                default_model=cfg.model,
                allow_private=True,  # callbacks to http:// and this machine's receivers
                high_priority_owners=cfg.high_priority_owners,
                create_rate_limit=cfg.create_rate_limit,
                create_rate_window_seconds=cfg.create_rate_window_seconds,
                routing=RoutingSettings(jobs_queue_url=r.jobs_queue_url, class_queue_urls=classes),
            ),
            "webhook": WebhookSettings(**store, signing_secret=self.webhook_secret(), allow_private=True),
            "on_upload": IntakeSettings(
                **store,
                jobs_queue_url=r.jobs_queue_url,
                class_queue_urls=classes,
                max_upload_bytes=cfg.max_upload_bytes,
            ),
            "dead_letter": lifecycle,
            "sweeper": lifecycle,
            "reconciler": lifecycle,
            "scaler": ScalerSettings(
                pools=[
                    Pool(
                        name="cpu",
                        queue_url=r.jobs_queue_url,
                        class_queue_urls=classes,
                        max_workers=cfg.max_workers,
                        jobs_per_worker=cfg.jobs_per_worker,
                    )
                ]
            ),
            "worker": WorkerSettings(
                **store,
                jobs_queue_url=r.jobs_queue_url,
                class_queue_urls=classes,
                engine=cfg.engine,
                model=cfg.model,
                device="cpu",
                cpu_threads=2,
                # an image brings its own model and cache folders (baked at build time)
                cache_dir=None if cfg.worker_image else str((cfg.data_dir / "cache").resolve()),
                timings=t,
                max_held_jobs=cfg.worker_held_jobs,
                batch_size=cfg.worker_batch_size,
                max_running_per_owner=cfg.max_running_per_owner,
                owner_cap_delay_seconds=cfg.owner_cap_delay_seconds,
                allow_private=True,  # source URLs on this machine (a presigned moto URL is http://127.0.0.1)
            ),
        }

    def webhook_secret(self) -> str:
        """The secret that signs this stack's callbacks: made once, kept in the data folder
        (`data/webhook-secret`), so that a receiver keeps verifying across restarts."""
        path = self.config.data_dir / "webhook-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def pool(self) -> Pool:
        scaler = self.settings["scaler"]
        assert isinstance(scaler, ScalerSettings)
        return scaler.pools[0]

    def set_max_workers(self, count: int) -> None:
        """Change the worker cap while running (tests hold workers back with 0)."""
        scaler = self.settings["scaler"]
        assert isinstance(scaler, ScalerSettings)
        pools = [scaler.pools[0].model_copy(update={"max_workers": count})]
        self.settings["scaler"] = scaler.model_copy(update={"pools": pools})

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        if self.compute is not None:
            self.compute.stop_all()
        for t in self.threads:
            t.join(timeout=5)
        if self.snapshot is not None:
            try:
                items, objects = self.snapshot.save()
                self.say(f"saved {items} records and {objects} files to {self.snapshot.folder}")
            except Exception as exc:
                self.say(f"could not save the state: {type(exc).__name__}: {exc}")
        if self.moto is not None:
            self.moto.stop()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        aws.reset()
        self.say("local stack stopped")

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- helpers -----------------------------------------------------------------------

    def _set_env(self, values: dict[str, str]) -> None:
        for k, v in values.items():
            self._saved_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=self._guard(name, target), name=f"local-{name}", daemon=True)
        t.start()
        self.threads.append(t)

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:
                if not self.stopping.is_set():
                    self.say(f"{name} stopped on an error: {type(exc).__name__}: {exc}")

        return run

    def _every(self, seconds: float, action: Callable[[], None]) -> None:
        while not self.stopping.wait(seconds):
            try:
                action()
            except Exception as exc:
                if not self.stopping.is_set():
                    self.say(f"{action.__name__}: {type(exc).__name__}: {exc}")

    def _poll(self, queue_url: str, handler: Callable[[dict[str, Any], Any], Any]) -> None:
        """An SQS event source: receive, invoke with a batch event, delete what succeeded."""
        sqs = aws.client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        name = queue_url.rsplit("/", 1)[-1]
        while not self.stopping.is_set():
            try:
                resp = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except Exception as exc:
                # Lambda's event source keeps polling through SQS errors; so does this one
                if not self.stopping.is_set():
                    self.say(f"{name}: could not receive ({type(exc).__name__}); polling again")
                    self.stopping.wait(1)
                continue
            messages = resp.get("Messages", [])
            if not messages:
                continue
            try:
                result = handler(sqs_event(messages, arn), LocalContext())
            except Exception as exc:
                # What Lambda's event source does with an invocation that raised (Powertools
                # raises when every record of a batch failed): nothing is deleted, the batch
                # comes back after its visibility timeout; the poller goes on.
                self.say(f"{name}: the handler raised {type(exc).__name__}; batch retried")
                continue
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            for m in messages:
                if m["MessageId"] not in failed:
                    try:
                        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
                    except Exception as exc:  # handled, not deleted: it comes back, and handlers are idempotent
                        if not self.stopping.is_set():
                            self.say(f"{name}: could not delete a handled message ({type(exc).__name__})")

    def _scale(self) -> None:
        """The scaler's logic with local processes for compute (Batch when deployed)."""
        from batchscribe.scaler import scale, sqs_depth

        assert self.compute is not None
        scaler = self.settings["scaler"]
        assert isinstance(scaler, ScalerSettings)
        self.compute.reap()
        scale(scaler.pools, sqs_depth, self.compute)

    @staticmethod
    def _moto_port(state: Path) -> int:
        """The port moto had last time when it is free (so links handed out before a restart
        still work), else any."""
        import socket

        try:
            port = int(json.loads((state / "endpoint.json").read_text())["moto_port"])
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as moto's server binds
                sock.bind(("127.0.0.1", port))
            return port
        except (OSError, ValueError, KeyError):
            return 0

    @staticmethod
    def _write_port(state: Path, port: int) -> None:
        state.mkdir(parents=True, exist_ok=True)
        (state / "endpoint.json").write_text(json.dumps({"moto_port": port}))

    def _save(self) -> None:
        if self.snapshot is not None:
            self.snapshot.save()

    def _recover(self) -> None:
        """Restored jobs that were on their way: the queues are new, so each queued job's
        message is sent again, and each running job (its worker died with the old stack) is
        requeued. Duplicates are harmless: claims are conditional."""
        from batchscribe.errors import InvalidTransition
        from batchscribe.lifecycle import Lifecycle
        from batchscribe.models import JobStatus

        settings = self.settings["sweeper"]
        assert isinstance(settings, LifecycleSettings)
        lifecycle = Lifecycle.from_settings(settings)
        for job in lifecycle.repo.due(JobStatus.RUNNING, now=float("inf")):
            lifecycle.send_again(job)
            with contextlib.suppress(InvalidTransition):
                lifecycle.repo.requeue(job.job_id, job.attempt)
        for job in lifecycle.repo.due(JobStatus.QUEUED, now=float("inf")):
            lifecycle.send_again(job)

    def _sweep(self) -> None:
        counts = self.handlers["sweeper"]({}, LocalContext())
        if any(counts.values()):
            self.say(f"sweeper: {counts}")

    def _worker_exited(self, worker_id: str, code: int) -> None:
        """What Batch's job state change event does when deployed: the reconciler."""
        event = {"detail": {"jobId": worker_id, "status": "SUCCEEDED" if code == 0 else "FAILED"}}
        counts = self.handlers["reconciler"](event, LocalContext())
        if any(counts.values()):
            self.say(f"reconciler: worker {worker_id} ended holding jobs: {counts}")

    def _watch(self) -> None:
        """Log each job's transitions in one line. Reads only the jobs that can still change
        (pending, queued and running ones are in the sparse sweep index) and, once, the final
        record of each that left it: the cost follows the active jobs, not the table's size."""
        from batchscribe.errors import JobNotFound
        from batchscribe.models import ACTIVE_STATUSES

        assert self.resources is not None
        repo = JobRepository(self.resources.table)
        active = {job.job_id: job for status in ACTIVE_STATUSES for job in repo.due(status, now=float("inf"))}
        for job_id in [j for j, status in self._seen.items() if j not in active and status in ACTIVE_STATUSES]:
            with contextlib.suppress(JobNotFound):
                active[job_id] = repo.get(job_id)
        for job in active.values():
            before = self._seen.get(job.job_id)
            if before == job.status.value:
                continue
            self._seen[job.job_id] = job.status.value
            self.transitions.append((job.job_id, before or "", job.status.value))
            extra = f" (attempt {job.attempt})" if job.status == "running" else ""
            if job.status == "failed" and job.error is not None:
                extra = f" ({job.error.code})"
            self.say(f"job {job.job_id[:8]}: {before + ' → ' if before else ''}{job.status.value}{extra}")
            if job.status.terminal:
                del self._seen[job.job_id]  # nothing follows a terminal status: forget it
                if job.callback is not None and job.callback.state == "pending":
                    # what the table stream and the notify function do in AWS
                    JobQueue(self.resources.webhooks_queue_url).send(
                        JobMessage(job_id=job.job_id, reason=MessageReason.CALLBACK)
                    )

    def _forget_moto_instances(self) -> None:
        """moto keeps a reference to every model object it ever made, for its dashboard
        (`moto.core.model_instances`): each DynamoDB item a GetItem, Query or Scan copied, each
        SQS message, each S3 key version. In a process that runs for hours that is the whole
        growth of its memory (measured: ~1.5 MB/s with a 0.3 s scan of 200 jobs). Nothing
        here reads the dashboard, so drop those references; live objects stay referenced by
        their backends."""
        from moto.core.model_instances import model_data

        for models in list(model_data.values()):
            for model in list(models.values()):
                del model.instances_tracked[:]  # type: ignore[attr-defined]

    def run_forever(self) -> None:
        """Foreground: until Ctrl-C or SIGTERM, then stop everything (no orphans)."""
        import signal

        def stop(_signum: int, _frame: Any) -> None:
            self.stopping_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.start()
        print(f"\n{ClientSettings.env_name('api')}={self.url}\nPress Ctrl-C to stop.\n", flush=True)
        try:
            while not self.stopping_requested.wait(0.5):
                pass
        finally:
            self.say("stopping…")
            self.stop()


class _ApiServer(ThreadingHTTPServer):
    """The local API's HTTP server. Its listen backlog is sized for bursts (API Gateway takes
    hundreds of connections at once); socketserver's default of 5 resets clients when fifty
    connect together, as a parallel upload script or the rate-limit test does."""

    request_queue_size = 256
    daemon_threads = True


def _handler_class(stack: LocalStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "batchscribe-local"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            handler = stack.handlers["api"]
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else None
            owner = self.headers.get(OWNER_HEADER) or "local"
            if not _OWNER.match(owner):
                self._send(
                    400,
                    {
                        "error": {
                            "code": "invalid_owner",
                            "message": f"{OWNER_HEADER} must be 1-64 letters, digits or _.@+=-",
                        }
                    },
                )
                return
            query = parse_qs(split.query, keep_blank_values=True)  # as API Gateway passes `?status=`
            event = proxy_event(
                self.command,
                split.path,
                user_arn=owner_arn(owner),
                caller=owner,
                body=body,
                headers=dict(self.headers.items()),
                query=query,
                source_ip=self.client_address[0],
            )
            try:
                resp = handler(event, LocalContext())
            except Exception as exc:
                self._send(502, {"error": {"code": "internal_error", "message": str(exc)}})
                return
            # API Gateway answers with both header forms merged (Powertools puts Content-Type
            # in multiValueHeaders only)
            headers = {k: ",".join(v) for k, v in (resp.get("multiValueHeaders") or {}).items()}
            self._send(resp["statusCode"], resp.get("body") or "", {**headers, **(resp.get("headers") or {})})

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            for k, v in (headers or {"Content-Type": "application/json"}).items():
                if k.lower() not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            """A CORS preflight: what API Gateway's mock integration answers when deployed."""
            api = stack.settings["api"]
            assert isinstance(api, ApiSettings)
            headers = cors_headers(self.headers.get("Origin"), api.cors_origins)
            if headers:
                headers["Access-Control-Allow-Methods"] = ",".join(CORS_ALLOW_METHODS)
                headers["Access-Control-Allow-Headers"] = ",".join(CORS_ALLOW_HEADERS)
            self._send(204, "", headers)

        do_GET = do_POST = do_DELETE = do_PUT = _handle

    return Handler
