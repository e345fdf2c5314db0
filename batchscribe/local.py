"""The whole pipeline on one machine: `batchscribe local up`.

- moto in server mode on 127.0.0.1 for S3, SQS and DynamoDB, provisioned by the same
  `batchscribe.resources` the tests use and the CDK stack mirrors (S3 -> SQS notification too);
- an HTTP server on 127.0.0.1 that turns requests into API Gateway proxy events for the real
  API Lambda handler (header `X-Batchscribe-Owner` stands in for the IAM caller);
- event-source emulation: the uploads queue -> on_upload, the jobs DLQ -> dead_letter, with real
  SQS batch events; the scaler and the sweeper on their schedules;
- a local compute backend behind the scaler's Compute interface: worker processes (the real
  worker program, CPU, tiny.en) that exit when idle, so scale-from-zero-and-back is visible.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from batchscribe.client import OWNER_HEADER
from batchscribe.resources import Names, Provisioned, provision
from batchscribe.scaler import Pool

LOCAL_ACCOUNT = "000000000000"
_OWNER = re.compile(r"^[A-Za-z0-9_.@+=-]{1,64}$")


def owner_arn(owner: str) -> str:
    return f"arn:aws:iam::{LOCAL_ACCOUNT}:user/{owner}"


@dataclass
class LocalConfig:
    port: int = 8000
    max_workers: int = 2
    data_dir: Path = field(default_factory=lambda: Path(".local-data"))
    engine: str = "faster-whisper"
    model: str = "tiny.en"
    jobs_per_worker: int = 1
    worker_idle_seconds: float = 5
    scaler_interval: float = 1.0
    sweeper_interval: float = 2.0
    lease_seconds: int = 6
    visibility_seconds: int = 10
    heartbeat_seconds: float = 1.0
    max_upload_bytes: int = 200 * 1024 * 1024
    quiet: bool = False


class _Context:
    function_name = "local"
    memory_limit_in_mb = 512
    invoked_function_arn = f"arn:aws:lambda:us-east-1:{LOCAL_ACCOUNT}:function:local"
    aws_request_id = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


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
    """Workers as local processes (the scaler's Compute interface)."""

    def __init__(self, env: dict[str, str], log_dir: Path, say: Callable[[str], None]) -> None:
        self.env = env
        self.log_dir = log_dir
        self.say = say
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.peak = 0
        self._lock = threading.Lock()

    def reap(self) -> None:
        with self._lock:
            for pid, proc in list(self.procs.items()):
                code = proc.poll()
                if code is not None:
                    del self.procs[pid]
                    how = "idle, exited" if code == 0 else f"exited with code {code}"
                    self.say(f"worker {pid} {how}; {len(self.procs)} running")

    def active(self, pool: Pool) -> int:
        self.reap()
        return len(self.procs)

    def submit(self, pool: Pool, count: int) -> None:
        with self._lock:
            for _ in range(count):
                log = (self.log_dir / f"worker-{int(time.time() * 1000)}-{self.started}.log").open("ab")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gpu_container.worker"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                log.close()
                self.procs[proc.pid] = proc
                self.started += 1
            self.peak = max(self.peak, len(self.procs))
            self.say(f"scaler: started {count} worker(s); {len(self.procs)} running")

    def pids(self) -> list[int]:
        with self._lock:
            return [pid for pid, p in self.procs.items() if p.poll() is None]

    def stop_all(self, timeout: float = 10) -> None:
        with self._lock:
            procs = list(self.procs.values())
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
        self.pool: Pool | None = None
        self.url = ""
        self.transitions: list[tuple[str, str, str]] = []
        self._seen: dict[str, str] = {}
        self.stopping_requested = threading.Event()
        self._saved_env: dict[str, str | None] = {}

    def say(self, line: str) -> None:
        if not self.config.quiet:
            self._say(f"{time.strftime('%H:%M:%S')} {line}")

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalStack:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        (cfg.data_dir / "workers").mkdir(exist_ok=True)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        names = Names(prefix="batchscribe-local")
        base_env = {
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "BATCHSCRIBE_TABLE_NAME": names.table,
            "BATCHSCRIBE_BUCKET_NAME": names.bucket,
        }
        self._set_env(
            {
                **base_env,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
                "POWERTOOLS_METRICS_NAMESPACE": "Batchscribe",
            }
        )
        self._reset_caches()
        import boto3

        self.resources = r = provision(boto3.Session(), names)
        self._set_env(
            {"BATCHSCRIBE_JOBS_QUEUE_URL": r.jobs_queue_url, "BATCHSCRIBE_MAX_UPLOAD_BYTES": str(cfg.max_upload_bytes)}
        )
        self._reset_caches()
        worker_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BATCHSCRIBE_", "POWERTOOLS_"))},
            **base_env,
            "BATCHSCRIBE_JOBS_QUEUE_URL": r.jobs_queue_url,
            "BATCHSCRIBE_ENGINE": cfg.engine,
            "BATCHSCRIBE_MODEL": cfg.model,
            "BATCHSCRIBE_DEVICE": "cpu",
            "BATCHSCRIBE_IDLE_EXIT_SECONDS": str(cfg.worker_idle_seconds),
            "BATCHSCRIBE_POLL_SECONDS": "1",
            "BATCHSCRIBE_LEASE_SECONDS": str(cfg.lease_seconds),
            "BATCHSCRIBE_VISIBILITY_SECONDS": str(cfg.visibility_seconds),
            "BATCHSCRIBE_HEARTBEAT_SECONDS": str(cfg.heartbeat_seconds),
            "BATCHSCRIBE_CPU_THREADS": "2",
            "BATCHSCRIBE_CACHE_DIR": str((cfg.data_dir / "cache").resolve()),
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        self.compute = LocalCompute(worker_env, cfg.data_dir / "workers", self.say)
        self.pool = Pool(
            name="cpu", queue_url=r.jobs_queue_url, max_workers=cfg.max_workers, jobs_per_worker=cfg.jobs_per_worker
        )

        self.http = ThreadingHTTPServer(("127.0.0.1", cfg.port), _handler_class(self))
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread("api", self.http.serve_forever)
        self._thread("uploads", lambda: self._poll(r.uploads_queue_url, "lambdas.on_upload.handler"))
        self._thread("dead-letters", lambda: self._poll(r.jobs_dlq_url, "lambdas.dead_letter.handler"))
        self._thread("scaler", lambda: self._every(cfg.scaler_interval, self._scale))
        self._thread("sweeper", lambda: self._every(cfg.sweeper_interval, self._sweep))
        self._thread("transitions", lambda: self._every(0.3, self._watch))
        self.say(
            f"local stack up: API {self.url} (moto {endpoint}); up to {cfg.max_workers} worker(s), "
            f"{cfg.engine}/{cfg.model} on CPU; worker logs in {cfg.data_dir / 'workers'}"
        )
        return self

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
        if self.moto is not None:
            self.moto.stop()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._reset_caches()
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

    @staticmethod
    def _reset_caches() -> None:
        import importlib

        from batchscribe import aws
        from batchscribe.settings import service_settings

        aws.reset()
        service_settings.cache_clear()
        for name in ("lambdas.api.handler", "lambdas.on_upload.handler", "lambdas.dead_letter.handler"):
            module = sys.modules.get(name) or importlib.import_module(name)
            module.service.cache_clear()

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

    def _poll(self, queue_url: str, module_name: str) -> None:
        """An SQS event source: receive, invoke with a batch event, delete what succeeded."""
        import importlib

        from batchscribe import aws

        handler = importlib.import_module(module_name).handler
        sqs = aws.client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        while not self.stopping.is_set():
            try:
                resp = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
            except Exception:
                if self.stopping.is_set():
                    return
                raise
            messages = resp.get("Messages", [])
            if not messages:
                continue
            result = handler(sqs_event(messages, arn), _Context())
            failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
            for m in messages:
                if m["MessageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])

    def _scale(self) -> None:
        from batchscribe.scaler import scale, sqs_depth

        assert self.pool is not None and self.compute is not None
        self.compute.reap()
        scale([self.pool], sqs_depth, self.compute)

    def _sweep(self) -> None:
        from batchscribe.service import JobService
        from batchscribe.settings import service_settings

        counts = JobService.from_settings(service_settings()).sweep()
        if any(counts.values()):
            self.say(f"sweeper: {counts}")

    def _watch(self) -> None:
        """Log each job's transitions in one line (a scan; fine for a local table)."""
        from batchscribe import aws

        assert self.resources is not None
        seen = self._seen
        paginator = aws.client("dynamodb").get_paginator("scan")
        for page in paginator.paginate(
            TableName=self.resources.table,
            ProjectionExpression="job_id, #s, attempt, progress, #e",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
        ):
            for item in page.get("Items", []):
                job_id = item["job_id"]["S"]
                if job_id.startswith("idem#"):
                    continue
                status = item["status"]["S"]
                before = seen.get(job_id)
                if before == status:
                    continue
                seen[job_id] = status
                self.transitions.append((job_id, before or "", status))
                extra = f" (attempt {item['attempt']['N']})" if status == "running" else ""
                if status == "failed" and "error" in item:
                    extra = f" ({item['error']['M']['code']['S']})"
                self.say(f"job {job_id[:8]}: {before + ' → ' if before else ''}{status}{extra}")

    def run_forever(self) -> None:
        """Foreground: until Ctrl-C or SIGTERM, then stop everything (no orphans)."""
        import signal

        def stop(_signum: int, _frame: Any) -> None:
            self.stopping_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.start()
        print(f"\nBATCHSCRIBE_API={self.url}\nPress Ctrl-C to stop.\n", flush=True)
        try:
            while not self.stopping_requested.wait(0.5):
                pass
        finally:
            self.say("stopping…")
            self.stop()


def _handler_class(stack: LocalStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "batchscribe-local"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _handle(self) -> None:
            from lambdas.api.handler import handler

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
            query = parse_qs(split.query)
            event = {
                "resource": split.path,
                "path": split.path,
                "httpMethod": self.command,
                "headers": dict(self.headers.items()),
                "multiValueHeaders": {k: [v] for k, v in self.headers.items()},
                "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
                "multiValueQueryStringParameters": query or None,
                "pathParameters": None,
                "stageVariables": None,
                "requestContext": {
                    "accountId": LOCAL_ACCOUNT,
                    "apiId": "local",
                    "stage": "local",
                    "requestId": uuid.uuid4().hex,
                    "httpMethod": self.command,
                    "path": split.path,
                    "resourcePath": split.path,
                    "identity": {"userArn": owner_arn(owner), "caller": owner, "sourceIp": self.client_address[0]},
                },
                "body": body,
                "isBase64Encoded": False,
            }
            try:
                resp = handler(event, _Context())
            except Exception as exc:
                self._send(502, {"error": {"code": "internal_error", "message": str(exc)}})
                return
            self._send(resp["statusCode"], resp.get("body") or "", resp.get("headers") or {})

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            for k, v in (headers or {"Content-Type": "application/json"}).items():
                if k.lower() not in ("content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = _handle

    return Handler
