"""The Batch stand-in: workers as local processes (the worker program from this checkout, or the
worker image run by podman), bookkept as AWS Batch bookkeeps its jobs and answering the part of
Batch's API the scaler calls, so the scaler reads it through the same code as the real Batch
(`BatchCompute`); the scaler's logic on its schedule against it; and a worker's end reported to
the reconciler as Batch's job state change event would.

Batch's rules, kept here: a submit of N > 1 workers is one array job with N children
(`parent:index`), each child one worker process (its worker id is its job id, as
AWS_BATCH_JOB_ID is on Batch); a child is RUNNING while its process runs (a local process
starts at once: no RUNNABLE wait), then SUCCEEDED (exit 0) or FAILED; the parent is PENDING
until every child has ended, then SUCCEEDED, or FAILED if any child failed; ListJobs lists a
queue's parents and single jobs by status, an array's children by `arrayJobId`; DescribeJobs
gives a parent's `arrayProperties.statusSummary`, an ended worker its `container.exitCode`;
ListJobs' AFTER_CREATED_AT filter lists a queue's jobs of any status created since then, newest
first (what the scaler's start back-off reads). A worker that exits with one of the codes of a
worker that could not start (batchscribe.resources.WorkerExit) is said so, with the cause its
one line gave (once per cause: the scaler starts the next worker, which would say the same)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchscribe.resources import WORKER_CANNOT_START, WORKER_NOT_STARTED, WorkerExit
from batchscribe.scaler import ACTIVE_BATCH_STATUSES, BatchCompute, Pool, Workers, scale, sqs_depth
from batchscribe.settings import WorkerSettings
from batchscribe_cli.local.handlers import Handler
from batchscribe_cli.local.lambda_events import LOCAL_ACCOUNT, LOCAL_REGION, LocalContext, batch_state_change

REPO_ROOT = Path(__file__).resolve().parents[2]  # the tree this local stack runs from


@dataclass
class LocalJob:
    """One Batch job: a single worker, an array parent, or an array child (a worker)."""

    job_id: str
    name: str
    queue: str
    definition: str
    created_ms: int
    status: str = "RUNNING"  # a worker's own; a parent's follows its children (`LocalCompute.status`)
    children: list[str] = field(default_factory=list)  # an array parent's child ids, by index
    proc: subprocess.Popen[bytes] | None = None
    stopped_ms: int | None = None
    exit_code: int | None = None  # its process's, once ended (Batch: the container's)
    log: Path | None = None  # what the worker printed

    @property
    def index(self) -> int | None:
        return int(self.job_id.rsplit(":", 1)[1]) if ":" in self.job_id else None


def _ms() -> int:
    return int(time.time() * 1000)


class LocalCompute:
    """The Batch stand-in (see the module): workers as local processes, the worker program or,
    with `image`, the worker image run by podman on the host network, as it runs on Batch.
    Each gets the worker's settings with its own worker id; when one ends,
    `on_exit(worker_id, code)` runs (the local stand-in for Batch's job state change event).
    As the scaler's Compute, it is `BatchCompute` reading and writing this stand-in."""

    def __init__(
        self,
        settings: WorkerSettings,
        base_env: dict[str, str],
        log_dir: Path,
        say: Callable[[str], None],
        on_exit: Callable[[str, int], None] | None = None,
        image: str | None = None,
        backoff: tuple[float, float] | None = None,
    ) -> None:
        self.settings = settings
        self.base_env = base_env
        self.image = image
        self.log_dir = log_dir
        self.say = say
        self.on_exit = on_exit
        self.jobs: dict[str, LocalJob] = {}  # every job submitted, by id (Batch's memory of them)
        # the scaler's view: Batch's API, answered here
        self.batch = BatchCompute(client=lambda: self, backoff=backoff)
        self.started = 0
        self.peak = 0
        self.closed = False  # stopping: a scaler tick still under way starts nothing more
        self._lock = threading.Lock()
        self.ticking = threading.Lock()  # held through a scaler tick (a cap changed waits for it)
        self._last_cause = ""  # the last cause a worker that could not start gave

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

    # ---- the scaler's Compute: BatchCompute over this stand-in ---------------------------------

    def workers(self, pool: Pool) -> Workers:
        return self.batch.workers(pool)

    def active(self, pool: Pool) -> int:
        return self.batch.workers(pool).active

    def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
        self.batch.submit(pool, count, on_demand)

    def cancel(self, job_ids: Sequence[str], reason: str) -> None:
        self.batch.cancel(job_ids, reason)

    # ---- Batch's API, as far as the scaler calls it -------------------------------------------

    def submit_job(
        self, jobName: str, jobQueue: str, jobDefinition: str, arrayProperties: dict[str, int] | None = None
    ) -> dict[str, str]:
        size = int((arrayProperties or {}).get("size", 0))
        job = LocalJob(uuid.uuid4().hex, jobName, jobQueue, jobDefinition, _ms())
        with self._lock:
            if self.closed:  # the stack is stopping: a worker started now would outlive it
                return {"jobId": job.job_id, "jobName": jobName}
            self.jobs[job.job_id] = job
            if size:
                job.children = [f"{job.job_id}:{i}" for i in range(size)]
                for child_id in job.children:
                    self._start_one(LocalJob(child_id, jobName, jobQueue, jobDefinition, job.created_ms))
            else:
                self._start_one(job)
            running = self._running()
            self.peak = max(self.peak, running)
        self.say(f"scaler: started {max(size, 1)} worker(s); {running} running")
        return {"jobId": job.job_id, "jobName": jobName, "jobArn": self._arn(job.job_id)}

    def get_paginator(self, operation: str) -> _Pages:
        if operation != "list_jobs":
            raise NotImplementedError(f"the Batch stand-in has no {operation} paginator")
        return _Pages(self.list_jobs)

    def list_jobs(
        self,
        jobQueue: str | None = None,
        arrayJobId: str | None = None,
        jobStatus: str = "RUNNING",
        filters: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One page (a local stack holds a few jobs): a queue's parents and single jobs, or an
        array's children, in `jobStatus`; with an AFTER_CREATED_AT filter (the only one the
        scaler uses), a queue's jobs created since then in any status, newest first."""
        self.reap()
        with self._lock:
            if arrayJobId is not None:
                parent = self.jobs.get(arrayJobId)
                jobs = [self.jobs[c] for c in parent.children] if parent else []
            else:
                jobs = [j for j in self.jobs.values() if j.queue == jobQueue and j.index is None]
            if filters:
                [after] = filters
                if after["name"] != "AFTER_CREATED_AT" or arrayJobId is not None:
                    raise NotImplementedError(f"the Batch stand-in has no {after['name']} filter here")
                since = int(after["values"][0])
                found = sorted((j for j in jobs if j.created_ms > since), key=lambda j: -j.created_ms)
                return {"jobSummaryList": [self._summary(j) for j in found]}
            return {"jobSummaryList": [self._summary(j) for j in jobs if self.status(j) == jobStatus]}

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        self.reap()
        with self._lock:
            found = [self.jobs[j] for j in jobs if j in self.jobs]
            return {"jobs": [{**self._summary(j), "jobQueue": j.queue} for j in found]}

    def cancel_job(self, jobId: str, reason: str) -> dict[str, Any]:
        """Batch cancels only jobs not started yet; a local worker starts at once, so this
        changes nothing (as CancelJob on a STARTING or RUNNING job)."""
        return {}

    # ---- Batch's bookkeeping (callers hold the lock) ------------------------------------------

    def status(self, job: LocalJob) -> str:
        """A worker's own status; an array parent's by Batch's rule."""
        if not job.children:
            return job.status
        ended = [self.jobs[c].status for c in job.children if self.jobs[c].status not in ACTIVE_BATCH_STATUSES]
        if len(ended) < len(job.children):
            return "PENDING"
        return "FAILED" if "FAILED" in ended else "SUCCEEDED"

    def _summary(self, job: LocalJob) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "jobArn": self._arn(job.job_id),
            "jobId": job.job_id,
            "jobName": job.name,
            "jobDefinition": job.definition,
            "createdAt": job.created_ms,
            "status": self.status(job),
        }
        if job.children:
            counts: dict[str, int] = {}
            for child_id in job.children:
                status = self.jobs[child_id].status
                counts[status] = counts.get(status, 0) + 1
            summary["arrayProperties"] = {"size": len(job.children), "statusSummary": counts}
        elif job.index is not None:
            summary["arrayProperties"] = {"index": job.index}
        if job.stopped_ms is not None:
            summary["stoppedAt"] = job.stopped_ms
        if job.exit_code is not None:
            summary["container"] = {"exitCode": job.exit_code}
        return summary

    @staticmethod
    def _arn(job_id: str) -> str:
        return f"arn:aws:batch:{LOCAL_REGION}:{LOCAL_ACCOUNT}:job/{job_id}"

    def _running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.proc is not None and j.status == "RUNNING")

    def _start_one(self, job: LocalJob) -> None:
        """Start the worker process of one job (a single job or an array child)."""
        argv, env = self.command(job.job_id)
        job.log = self.log_dir / f"worker-{_ms()}-{self.started}.log"
        with job.log.open("ab") as log:
            job.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.jobs[job.job_id] = job
        self.started += 1

    # ---- the processes ------------------------------------------------------------------------

    def reap(self) -> None:
        """Workers whose process ended are SUCCEEDED (exit 0) or FAILED; each is reported."""
        ended: list[tuple[str, int]] = []
        with self._lock:
            for job in self.jobs.values():
                code = job.proc.poll() if job.proc is not None and job.status == "RUNNING" else None
                if code is not None and job.proc is not None:
                    job.status, job.stopped_ms = ("SUCCEEDED" if code == 0 else "FAILED"), _ms()
                    job.exit_code = code
                    how = "idle, exited" if code == 0 else self._exited(job, code)
                    self.say(f"worker {job.proc.pid} {how}; {self._running()} running")
                    ended.append((job.job_id, code))
        if self.on_exit is not None:
            for worker_id, code in ended:
                self.on_exit(worker_id, code)

    def _exited(self, job: LocalJob, code: int) -> str:
        """`exited with code N`; for a worker that could not start, what its code means and the
        cause its one line gave, when it differs from the last one said."""
        words = f"exited with code {code}"
        if code not in {int(c) for c in WORKER_CANNOT_START}:
            return words
        words += f" ({WorkerExit(code).meaning}; it claimed nothing)"
        cause = not_started_cause(job.log)
        if cause and cause != self._last_cause:
            self._last_cause = cause
            words += f": {cause}"
        return words

    def _procs(self) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return [j.proc for j in self.jobs.values() if j.proc is not None and j.status == "RUNNING"]

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs() if p.poll() is None]

    def stop_all(self, timeout: float = 10) -> None:
        with self._lock:
            self.closed = True
        procs = self._procs()
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


def not_started_cause(log: Path | None) -> str:
    """The message of the one line a worker that could not start logged ("" if none)."""
    lines = log.read_text(errors="replace").splitlines() if log is not None and log.exists() else []
    for line in reversed(lines):
        with contextlib.suppress(ValueError):
            fields = json.loads(line)
            if isinstance(fields, dict) and fields.get("event") == WORKER_NOT_STARTED:
                return str(fields.get("message", ""))
    return ""


@dataclass
class _Pages:
    """boto3's paginator, as far as the scaler uses it: every page of one listing."""

    list_jobs: Callable[..., dict[str, Any]]

    def paginate(self, **request: Any) -> Iterator[dict[str, Any]]:
        yield self.list_jobs(**request)


def scaler_tick(compute: LocalCompute, pools: Callable[[], list[Pool]]) -> Callable[[], None]:
    """The scaler's logic with local processes for compute (Batch when deployed); `pools` is
    read at each tick (a test may change the worker cap while the stack runs)."""

    said: dict[str, int] = {}  # per pool, the failed starts its last hold was said for

    def tick() -> None:
        with compute.ticking:
            _tick()

    def _tick() -> None:
        compute.reap()
        for d in scale(pools(), sqs_depth, compute):
            if not d.held_seconds:
                said.pop(d.pool, None)
                continue
            failed = d.failed_starts
            if said.get(d.pool) != failed:
                said[d.pool] = failed
                compute.say(
                    f"scaler: the {d.pool} pool's last worker(s) could not start ({failed} lately); starting "
                    f"none for {d.held_seconds:.0f} s, the jobs stay queued (fix the cause the worker said, or "
                    "`local down` and up again)"
                )

    return tick


def report_exits(reconciler: Handler, say: Callable[[str], None]) -> Callable[[str, int], None]:
    """A worker's end, delivered to the reconciler as Batch's job state change event."""

    def worker_exited(worker_id: str, code: int) -> None:
        event = batch_state_change(worker_id, "SUCCEEDED" if code == 0 else "FAILED")
        if ":" in worker_id:  # an array child: Batch's event carries its index
            event["detail"]["arrayProperties"] = {"index": int(worker_id.rsplit(":", 1)[1])}
        counts = reconciler(event, LocalContext())
        if any(counts.values()):
            say(f"reconciler: worker {worker_id} ended holding jobs: {counts}")

    return worker_exited
