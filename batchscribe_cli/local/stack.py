"""The local stack: the deployed stack with each AWS part replaced by its stand-in, composed
here and nothing else (each stand-in is its own module of this package)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from batchscribe.resources import Names, cuda_cache_env
from batchscribe.scaler import Pool
from batchscribe.settings import (
    ENV_PREFIX,
    ApiSettings,
    ClientSettings,
    EnvSettings,
    LifecycleSettings,
    ScalerSettings,
    WorkerSettings,
    powertools_env,
)
from batchscribe_cli.local import handlers, iam, policies
from batchscribe_cli.local.batch import LocalCompute, report_exits, scaler_tick
from batchscribe_cli.local.callers import Callers
from batchscribe_cli.local.config import LocalConfig, process_settings, webhook_secret
from batchscribe_cli.local.datadir import DataDirLock
from batchscribe_cli.local.event_sources import Loops, SqsEventSource, StreamEventSource, scheduled
from batchscribe_cli.local.gateway import ApiGateway
from batchscribe_cli.local.lambda_events import LOCAL_REGION
from batchscribe_cli.local.motoserver import MotoServer, forget_model_instances, forget_read_stream_records
from batchscribe_cli.local.snapshot import Snapshot, recover
from batchscribe_cli.local.transitions import TransitionLog
from batchscribe_cli.provision import Provisioned, provision

STACK_PREFIX = "batchscribe-local"
DEVICE_WORDS = {
    "cpu": "on CPU",
    "cuda": "on the GPU (device=cuda: each worker proves it before its first claim, or exits)",
    "auto": "on the GPU if it passes the preflight, else on CPU (device=auto)",
}


class LocalStack:
    def __init__(self, config: LocalConfig | None = None, say: Callable[[str], None] | None = None) -> None:
        self.config = config or LocalConfig()
        self._say = say or (lambda line: print(line, flush=True))
        self.stopping = threading.Event()
        self.stopping_requested = threading.Event()
        self.loops = Loops(self.stopping, self.say)
        self.env = handlers.ProcessEnvironment()
        self.log = TransitionLog(self.say)
        self.moto: MotoServer | None = None
        self.http: ApiGateway | None = None
        self.resources: Provisioned | None = None
        self.compute: LocalCompute | None = None
        self.snapshot: Snapshot | None = None
        self.iam: iam.Enforcer | None = None
        self.data_lock: DataDirLock | None = None
        self.settings: dict[str, EnvSettings] = {}
        self.handlers: dict[str, handlers.Handler] = {}
        self.url = ""

    def say(self, line: str) -> None:
        if not self.config.quiet:
            self._say(f"{time.strftime('%H:%M:%S')} {line}")

    @property
    def transitions(self) -> deque[tuple[str, str, str]]:
        """The last status changes: (job id, status before or "", status after)."""
        return self.log.transitions

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalStack:
        import boto3

        cfg = self.config
        self.data_lock = DataDirLock(cfg.data_dir).acquire()  # one stack per data folder
        (cfg.data_dir / "workers").mkdir(parents=True, exist_ok=True)
        self.moto = MotoServer(cfg.data_dir / "state")
        aws_env = self.moto.start()
        self.env.set(aws_env)
        self.resources = r = provision(boto3.Session(), Names(prefix=STACK_PREFIX), cfg.timings, LOCAL_REGION)
        self.settings = self.process_settings(r)
        self.snapshot = Snapshot(self.moto.state, r.table, r.bucket)
        restored = self.snapshot.restore()
        self.env.set(handlers.handler_env(self.settings))  # the handlers run in this process
        # each handler's calls are made with its function's role
        self.handlers = {name: iam.as_role(name, h) for name, h in handlers.load().items()}
        self.iam = self._enforce_iam(r) if cfg.iam else None
        self.compute = self._compute(aws_env)
        stream = self._stream(r.table)  # opened at LATEST: what was restored is not news
        if any(restored):
            self.say(f"restored {restored[0]} records and {restored[1]} files from {self.snapshot.folder}")
            recover(self._lifecycle)
        self.http = ApiGateway(cfg.port, self.handlers["api"], self._api.cors_origins, self._callers(r))
        self.url = self.http.url
        self.data_lock.publish(self.url, self.moto.endpoint)
        self._start_loops(r, stream)
        where = f"from image {cfg.worker_image}" if cfg.worker_image else DEVICE_WORDS[cfg.device]
        self.say(
            f"local stack up: API {self.url} (moto {self.moto.endpoint}); up to {cfg.max_workers} worker(s), "
            f"{cfg.engine}/{cfg.model} {where}; data folder {cfg.data_dir.resolve()} (worker logs in workers/)"
        )
        return self

    def _enforce_iam(self, r: Provisioned) -> iam.Enforcer:
        """From now on each component's calls are checked against its role's policy."""
        from batchscribe import aws

        stream = aws.client("dynamodb").describe_table(TableName=r.table)["Table"]["LatestStreamArn"]
        values = policies.local_values(r, stream, scaler_function=f"{STACK_PREFIX}-scaler")
        enforcer = iam.Enforcer(policies.load(values, self.config.policies), self.say)
        iam.enforce(enforcer)
        where = "" if self.config.worker_image is None else "; workers from an image are NOT checked (no hook in it)"
        self.say(f"IAM: each component's AWS calls checked against its role's policy from the CDK stack{where}")
        return enforcer

    def _callers(self, r: Provisioned) -> Callers | None:
        """With IAM checked, each API request is checked against its caller's managed policies."""
        if self.iam is None:
            return None
        values = policies.local_values(r, "", scaler_function="")
        return Callers.of(policies.load_callers(values, self.config.policies), self.config.stats_owners)

    def _compute(self, aws_env: dict[str, str]) -> LocalCompute:
        """The Batch stand-in. Workers from this checkout inherit this process's environment
        (PATH, PYTHONPATH...) but none of its AWS, service or Powertools variables; an image
        brings its own. With IAM checked, a worker from this checkout checks its calls against
        the worker role's policy."""
        cfg = self.config
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", ENV_PREFIX, "POWERTOOLS_"))}
        if self.iam is not None and not cfg.worker_image:
            worker_policy = self.iam.policies[policies.WORKER]
            inherited.update(iam.worker_env(worker_policy, cfg.data_dir / "iam", inherited.get("PYTHONPATH", "")))
        if cfg.device != "cpu" and not cfg.worker_image:  # kernels the driver compiles, kept across workers
            cache = cfg.data_dir / "cuda-cache"
            cache.mkdir(parents=True, exist_ok=True)
            inherited.update(cuda_cache_env(str(cache.resolve())))
        worker = self.settings["worker"]
        assert isinstance(worker, WorkerSettings)
        return LocalCompute(
            worker,
            {**({} if cfg.worker_image else inherited), **aws_env, **powertools_env(), "PYTHONUNBUFFERED": "1"},
            cfg.data_dir / "workers",
            self.say,
            on_exit=report_exits(self.handlers["reconciler"], self.say),
            image=cfg.worker_image,
            backoff=self._scaler.start_backoff,
        )

    def _stream(self, table: str) -> StreamEventSource:
        """The jobs table's stream -> the notify function, as the notify construct wires it;
        the terminal lines read the same records."""
        source = StreamEventSource(
            table,
            self.handlers["notify"],
            stopping=self.stopping,
            say=self.say,
            observers=[self.log.observe],
            after_read=forget_read_stream_records,  # moto would keep every record forever
        )
        source.open()
        return source

    def _start_loops(self, r: Provisioned, stream: StreamEventSource) -> None:
        assert self.http is not None and self.compute is not None
        t, loops = self.config.timings, self.loops
        loops.start("api", self.http.serve_forever)

        def sqs(queue_url: str, handler: str) -> Callable[[], None]:
            # Lambda's event source receives and deletes with the function's role
            source = SqsEventSource(queue_url, self.handlers[handler], stopping=self.stopping, say=self.say)
            return iam.as_role(handler, source.run)

        loops.start("uploads", sqs(r.uploads_queue_url, "on_upload"))
        for i, dlq_url in enumerate(r.all_jobs_dlq_urls):  # one per priority class
            loops.start(f"dead-letters-{i}", sqs(dlq_url, "dead_letter"))
        loops.start("webhooks", sqs(r.webhooks_queue_url, "webhook"))
        loops.start("jobs-stream", iam.as_role("notify", stream.run))  # read with the function's role
        scaler = scaler_tick(self.compute, lambda: self._scaler.pools)
        loops.every("scaler", t.scale_every_seconds, iam.as_role("scaler", scaler))
        loops.every("sweeper", t.sweep_every_seconds, scheduled("sweeper", self.handlers["sweeper"], self.say))
        loops.every("moto-references", 5, forget_model_instances)
        if self.iam is not None:
            loops.every("worker-denials", 1, iam.WorkerDenials(self.config.data_dir / "iam" / "checks", self.say))
        loops.every("state", self.config.save_every_seconds, self._save)

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.http is not None:
            self.http.close()
        if self.compute is not None:
            self.compute.stop_all()
        self.loops.join(timeout=5)
        if self.snapshot is not None:
            try:
                items, objects = self.snapshot.save()
                self.say(f"saved {items} records and {objects} files to {self.snapshot.folder}")
            except Exception as exc:
                self.say(f"could not save the state: {type(exc).__name__}: {exc}")
        self._iam_report()
        if self.moto is not None:
            self.moto.stop()
        self.env.restore()
        if self.data_lock is not None:
            self.data_lock.release()
        self.say("local stack stopped")

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

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

    # ---- settings ----------------------------------------------------------------------

    def process_settings(self, r: Provisioned) -> dict[str, EnvSettings]:
        """Each process's settings, from the same models the CDK stack writes them from."""
        return process_settings(self.config, r)

    def webhook_secret(self) -> str:
        return webhook_secret(self.config.data_dir)

    @property
    def pool(self) -> Pool:
        return self._scaler.pools[0]

    def set_max_workers(self, count: int) -> None:
        """Change the worker cap while running (tests hold workers back with 0). A scaler tick
        under way finishes first: none started on the old cap after this returns."""
        pools = [self.pool.model_copy(update={"max_workers": count})]
        with self.compute.ticking if self.compute is not None else contextlib.nullcontext():
            self.settings["scaler"] = self._scaler.model_copy(update={"pools": pools})

    @property
    def _scaler(self) -> ScalerSettings:
        scaler = self.settings["scaler"]
        assert isinstance(scaler, ScalerSettings)
        return scaler

    @property
    def _api(self) -> ApiSettings:
        api = self.settings["api"]
        assert isinstance(api, ApiSettings)
        return api

    @property
    def _lifecycle(self) -> LifecycleSettings:
        lifecycle = self.settings["sweeper"]
        assert isinstance(lifecycle, LifecycleSettings)
        return lifecycle

    def iam_checks(self) -> dict[str, Any]:
        """What was checked and denied so far: in this process, and by the workers that ended."""
        if self.iam is None:
            return {"checked": [], "denied": []}
        return iam.collect(self.iam, self.config.data_dir / "iam" / "checks")

    def _iam_report(self) -> None:
        if self.iam is None:
            return
        iam.enforce(None)
        found = self.iam_checks()
        (self.config.data_dir / "iam").mkdir(parents=True, exist_ok=True)
        (self.config.data_dir / "iam" / "checks.json").write_text(json.dumps(found, indent=1))
        checked, denied = (sum(n for *_, n in found[k]) for k in ("checked", "denied"))
        self.say(f"IAM: {checked} calls allowed, {denied} denied ({self.config.data_dir / 'iam' / 'checks.json'})")

    def _save(self) -> None:
        if self.snapshot is not None:
            self.snapshot.save()
