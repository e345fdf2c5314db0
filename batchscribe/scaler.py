"""Scaling lives in the workers, not the API: this decides how many worker processes to
start, from the queue backlog and the workers already active, per pool (GPU, CPU).

The decision is plain code behind a `Compute` interface. `BatchCompute` reads and writes AWS
Batch through Batch's own API (ListJobs, DescribeJobs, SubmitJob, CancelJob); the local
stack's Batch stand-in answers that same API with worker processes, so the counting rule below
is the one both run. Workers exit on their own when idle, so scaling down is theirs; the scaler
only ever adds, and moves work Spot cannot start to the on-demand queue.

Workers that cannot start (the GPU preflight failed, the model would not load, the settings are
wrong: `WorkerExit`, recorded by Batch as the container's exit code) hold the pool back: after
one, the pool starts no worker for `start_backoff_seconds`, doubled for each further one within
the look-back, at most `start_backoff_max_seconds` (`start_hold`); the jobs wait queued and the
alarm on the workers' one line says why. Starting one every minute on a host that fails the same
way each time only paid for instance starts.

Batch's array jobs: a submit of N > 1 workers is one array job whose N children (ids
`parent:index`) are the workers. The parent stays SUBMITTED or PENDING until every child has
ended, whatever they are doing, so a worker is counted as a child, never as its parent's size.

One run at a time: `Coalescer` runs the scaler under a lease in the jobs table
(`repository.locks`), however many wakes arrive at once (see there).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aws_lambda_powertools import Logger

from batchscribe import aws
from batchscribe.queue import ClassQueues
from batchscribe.repository.locks import LeaseState, RunLease
from batchscribe.resources import SCALER_LEASE, WORKER_CANNOT_START, WORKER_NAME_PREFIX
from batchscribe.settings import Pool, ScalerSettings

ACTIVE_BATCH_STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
ENDED_BATCH_STATUSES = ("SUCCEEDED", "FAILED")
DESCRIBE_JOBS_MAX = 100  # DescribeJobs takes up to 100 job ids
ARRAY_MAX = 10_000  # Batch's largest array
STUCK_REASON = "batchscribe: RUNNABLE past the fallback time on the Spot path; moved to the on-demand queue"

logger = Logger(service="batchscribe", child=True)


@dataclass(frozen=True)
class Workers:
    """A pool's workers as Batch reports them now."""

    active: int  # submitted and not ended (array children counted one by one)
    on_demand: int = 0  # of those, on the pool's on-demand queue
    stuck: tuple[str, ...] = ()  # job ids RUNNABLE on the Spot path past the fallback time
    held_seconds: float = 0.0  # start none for this long yet: its last workers could not start
    failed_starts: int = 0  # workers that could not start within the look-back (see `start_hold`)


class Compute(Protocol):
    def workers(self, pool: Pool) -> Workers:
        """This pool's workers submitted or running now."""
        ...

    def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
        """Start `count` more workers of this pool (on its on-demand queue, if asked and it has one)."""
        ...

    def cancel(self, job_ids: Sequence[str], reason: str) -> None:
        """Cancel these workers (jobs not started yet)."""
        ...


def plan(visible: int, in_flight: int, active: int, pool: Pool) -> int:
    """How many workers to add: enough for the messages no running worker will take, never
    more than the cap.

    A message in flight is held by a running worker (claimed, being claimed or prepared): it is
    served, not backlog; counting it again started a worker for every job a worker had just
    claimed, which found nothing to receive and exited idle, one per tick. The running workers'
    free slots (each holds up to `slots_per_worker` jobs, and receives within one poll) take
    visible messages first; only what is left needs new workers, `jobs_per_worker` each.
    Messages in flight beyond what the running workers can hold (none running: a worker ended
    holding them, and they come back visible) count as backlog, as before."""
    capacity = active * pool.slots_per_worker
    free = max(0, capacity - in_flight)
    orphaned = max(0, in_flight - capacity)
    need = max(0, visible - free) + orphaned
    if need <= 0:
        return 0
    wanted = min(pool.max_workers, active + math.ceil(need / pool.jobs_per_worker))
    return max(0, wanted - active)


def start_hold(stopped: Sequence[float], now: float, base: float, most: float) -> float:
    """Seconds a pool starts no worker yet, from when its workers that could not start ended
    (`stopped`, epoch seconds): `base` after the last one, doubled for each other one within the
    look-back (twice `most`), at most `most`; 0 once that has passed, or with none."""
    recent = [t for t in stopped if now - t <= 2 * most]
    if not recent or base <= 0:
        return 0.0
    wait = min(most, base * 2 ** (len(recent) - 1))
    return max(0.0, max(recent) + wait - now)


QueueDepth = Callable[[Pool], tuple[int, int]]


@dataclass
class Decision:
    pool: str
    backlog: int
    active: int
    submitted: int
    moved: int = 0  # workers cancelled on the Spot path: `submitted` went to the on-demand queue
    held_seconds: float = 0.0  # the backlog wanted workers, but the pool's last ones could not start
    failed_starts: int = 0  # the pool's workers that could not start within the look-back


def scale(pools: list[Pool], depth: QueueDepth, compute: Compute) -> list[Decision]:
    return [scale_pool(pool, depth, compute) for pool in pools]


def scale_pool(pool: Pool, depth: QueueDepth, compute: Compute) -> Decision:
    """Add what the backlog needs. Workers stuck RUNNABLE on the Spot path are cancelled and
    not counted, so what they were for is submitted again, to the on-demand queue; once the
    pool has workers there (Spot could not start them), new workers go there too, until those
    have exited. An empty queue costs no Batch call at all."""
    visible, in_flight = depth(pool)
    backlog = visible + in_flight
    if not backlog:
        return Decision(pool.name, 0, 0, 0)
    workers = compute.workers(pool)
    active = workers.active
    if workers.stuck:
        compute.cancel(workers.stuck, STUCK_REASON)
        active -= len(workers.stuck)
        logger.warning("workers stuck RUNNABLE on Spot cancelled", extra={"pool": pool.name, "stuck": workers.stuck})
    n = plan(visible, in_flight, active, pool)
    if n and workers.held_seconds > 0:  # the scaler function's `scaled` line and metric say so
        held = round(workers.held_seconds, 1)
        return Decision(pool.name, backlog, active, 0, len(workers.stuck), held, workers.failed_starts)
    if n:
        compute.submit(pool, n, on_demand=bool(workers.on_demand or workers.stuck))
    return Decision(pool.name, backlog, active, n, len(workers.stuck))


def sqs_depth(pool: Pool) -> tuple[int, int]:
    """The pool's backlog over its priority classes, each weighted (resources.SCALE_WEIGHTS):
    urgent work brings capacity sooner, low work less of it, and any backlog at least one worker."""
    return ClassQueues(pool.queue_url, pool.class_queue_urls).weighted_depth()


# ---- AWS Batch ----------------------------------------------------------------------------


def active_children(array: dict[str, Any]) -> int:
    """An array parent's children not ended yet, from its `arrayProperties`: its size less
    those SUCCEEDED or FAILED (children not yet in the summary are not ended either)."""
    summary = array.get("statusSummary") or {}
    size = int(array.get("size") or 0)
    if size:
        return max(0, size - sum(int(summary.get(s, 0)) for s in ENDED_BATCH_STATUSES))
    return sum(int(summary.get(s, 0)) for s in ACTIVE_BATCH_STATUSES)


def _is_child(job: dict[str, Any]) -> bool:
    return ":" in job["jobId"] or "index" in (job.get("arrayProperties") or {})


def _could_not_start(job: dict[str, Any]) -> bool:
    """A worker that ended with the exit code of one that could not start (its container's)."""
    return (job.get("container") or {}).get("exitCode") in WORKER_CANNOT_START


def _stopped(job: dict[str, Any]) -> float:
    return int(job.get("stoppedAt") or job.get("createdAt") or 0) / 1000


@dataclass
class QueueLook:
    """One pool's jobs in one job queue that have not ended (array children left out) and,
    for each array parent among them, its `arrayProperties` (size and children's statuses)."""

    jobs: list[dict[str, Any]]
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def active(self) -> int:
        return sum(active_children(self.arrays[j["jobId"]]) if j["jobId"] in self.arrays else 1 for j in self.jobs)


class BatchCompute:
    """Workers as AWS Batch jobs; more than one at a time goes as one array job.

    Per pool with a backlog, a look costs one ListJobs per active status (five, each one page
    up to 100 jobs) on the pool's job queue, five more on its on-demand queue when it has one,
    and one DescribeJobs per 100 array parents whose listing carried no status summary (the
    cheaper way to count children: ListJobs by `arrayJobId` costs a call per parent and status).
    With `fallback_after` seconds, array parents older than that with RUNNABLE children cost
    one ListJobs (`arrayJobId`, RUNNABLE) each, to find which children waited that long.
    With `backoff` (base, most seconds: `start_hold`), a pool whose backlog wants workers also
    costs one ListJobs per job queue for its workers created within the look-back (newest first,
    any status), and one per failed array parent among them for its FAILED children, whose exit
    codes say whether they could not start."""

    def __init__(
        self,
        name_prefix: str = WORKER_NAME_PREFIX,
        clock: Callable[[], float] = time.time,
        fallback_after: float = 0,
        client: Callable[[], Any] | None = None,
        backoff: tuple[float, float] | None = None,
    ) -> None:
        self.prefix = name_prefix
        self.clock = clock
        self.fallback_after = fallback_after
        self.backoff = backoff
        self._client = client

    @property
    def _batch(self) -> Any:
        return self._client() if self._client is not None else aws.client("batch")

    def _pages(self, **request: Any) -> Iterator[dict[str, Any]]:
        yield from self._batch.get_paginator("list_jobs").paginate(**request)

    def look(self, pool: Pool, queue: str) -> QueueLook:
        name = f"{self.prefix}-{pool.name}-"
        jobs: dict[str, dict[str, Any]] = {}  # by id: a job moving on between two pages is seen once
        for status in ACTIVE_BATCH_STATUSES:
            for page in self._pages(jobQueue=queue, jobStatus=status):
                for job in page.get("jobSummaryList", []):
                    if job.get("jobName", "").startswith(name) and not _is_child(job):
                        jobs[job["jobId"]] = {"status": status, **job}
        return QueueLook(list(jobs.values()), self._arrays(list(jobs.values())))

    def _arrays(self, jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The array parents among `jobs`: from the listing when it carries their status
        summary, else from DescribeJobs (up to 100 ids a call)."""
        arrays = {j["jobId"]: j["arrayProperties"] for j in jobs if "statusSummary" in (j.get("arrayProperties") or {})}
        unknown = [j["jobId"] for j in jobs if j["jobId"] not in arrays]
        for i in range(0, len(unknown), DESCRIBE_JOBS_MAX):
            for job in self._batch.describe_jobs(jobs=unknown[i : i + DESCRIBE_JOBS_MAX]).get("jobs", []):
                props = job.get("arrayProperties") or {}
                if "size" in props:
                    arrays[job["jobId"]] = props
        return arrays

    def workers(self, pool: Pool) -> Workers:
        main = self.look(pool, pool.job_queue)
        on_demand = self.look(pool, pool.on_demand_job_queue).active if pool.on_demand_job_queue else 0
        stuck = self.stuck(main) if pool.on_demand_job_queue and self.fallback_after > 0 else ()
        held, failed = 0.0, 0
        if self.backoff is not None:
            base, most = self.backoff
            now = self.clock()
            queues = [pool.job_queue, *([pool.on_demand_job_queue] if pool.on_demand_job_queue else [])]
            stopped = [t for q in queues for t in self.failed_starts(pool, q, since=now - 2 * most)]
            held, failed = start_hold(stopped, now, base, most), len(stopped)
        return Workers(main.active + on_demand, on_demand, stuck, held, failed)

    def failed_starts(self, pool: Pool, queue: str, since: float) -> list[float]:
        """When (epoch seconds) this pool's workers created since `since` on `queue` ended
        having not started (a `WorkerExit` code of a worker that could not start)."""
        name = f"{self.prefix}-{pool.name}-"
        since_ms = int(since * 1000)
        after = {"name": "AFTER_CREATED_AT", "values": [str(since_ms)]}
        out: list[float] = []
        for page in self._pages(jobQueue=queue, filters=[after]):
            for job in page.get("jobSummaryList", []):
                if not job.get("jobName", "").startswith(name) or _is_child(job):
                    continue
                array = job.get("arrayProperties") or {}
                if "size" not in array:
                    if job.get("status") == "FAILED" and _could_not_start(job):
                        out.append(_stopped(job))
                    continue
                # a parent is FAILED only once every child has ended: its children say how they did
                summary = array.get("statusSummary")
                if job.get("status") == "FAILED" or summary is None or int(summary.get("FAILED", 0)):
                    for child_page in self._pages(arrayJobId=job["jobId"], jobStatus="FAILED"):
                        out += [_stopped(c) for c in child_page.get("jobSummaryList", []) if _could_not_start(c)]
        return out

    def stuck(self, look: QueueLook) -> tuple[str, ...]:
        """Workers RUNNABLE for `fallback_after` seconds or more (counted from their creation:
        a job is SUBMITTED and PENDING for seconds only, without dependencies)."""
        cutoff = (self.clock() - self.fallback_after) * 1000  # Batch's times are in ms
        found: list[str] = []
        for job in look.jobs:
            if int(job.get("createdAt", 0)) > cutoff:
                continue  # nothing in it can have waited that long
            array = look.arrays.get(job["jobId"])
            if array is None:
                found += [job["jobId"]] if job["status"] == "RUNNABLE" else []
            elif int((array.get("statusSummary") or {}).get("RUNNABLE", 0)):
                for page in self._pages(arrayJobId=job["jobId"], jobStatus="RUNNABLE"):
                    found += [
                        c["jobId"] for c in page.get("jobSummaryList", []) if int(c.get("createdAt", 0)) <= cutoff
                    ]
        return tuple(found)

    def submit(self, pool: Pool, count: int, on_demand: bool = False) -> None:
        queue = pool.on_demand_job_queue if on_demand and pool.on_demand_job_queue else pool.job_queue
        for size in _chunks(count, ARRAY_MAX):
            kwargs: dict[str, Any] = {
                "jobName": f"{self.prefix}-{pool.name}-{int(self.clock())}",
                "jobQueue": queue,
                "jobDefinition": pool.job_definition,
            }
            if size > 1:
                kwargs["arrayProperties"] = {"size": size}
            self._batch.submit_job(**kwargs)

    def cancel(self, job_ids: Sequence[str], reason: str) -> None:
        for job_id in job_ids:
            self._batch.cancel_job(jobId=job_id, reason=reason)

    def active(self, pool: Pool) -> int:
        return self.workers(pool).active


def _chunks(count: int, most: int) -> list[int]:
    return [min(most, count - i) for i in range(0, count, most)]


# ---- one run at a time --------------------------------------------------------------------

T = TypeVar("T")


@dataclass
class Runs(Generic[T]):
    """What one invocation did: its rounds' results, or nothing because another run held the
    lease (`coalesced`: that run's next round serves this wake)."""

    results: list[T] = field(default_factory=list)
    coalesced: bool = False
    wakes: int = 0  # wakes of other invocations folded into these rounds


class Coalescer:
    """Runs a task under a lease so that at most one run is under way, runs start at least
    `window` seconds apart, and no wake is lost: an invocation that finds the lease held counts
    a wake on it and returns at once; the holder, finding a wake counted when its round ends,
    waits out the window and runs another round (while `until` leaves time for one)."""

    def __init__(
        self,
        lease: RunLease,
        window: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.lease = lease
        self.window = window
        self.clock = clock
        self.sleep = sleep

    @classmethod
    def of(cls, settings: ScalerSettings) -> Coalescer | None:
        """The scaler's, when the deployment names the table that holds its lease."""
        if not settings.lease_table:
            return None
        return cls(RunLease(settings.lease_table, SCALER_LEASE, settings.lease_seconds), settings.coalesce_seconds)

    def _take(self, me: str) -> LeaseState | None:
        """The lease, or None when a wake was counted for the run that holds it."""
        for _ in range(3):
            taken, state = self.lease.take(me)
            if taken:
                return state
            if state.holder is not None and self.lease.note_wake(state.holder):
                return None
        return None  # three holders came and went: the last one started after this wake

    def run(self, task: Callable[[], T], until: float) -> Runs[T]:
        me = uuid.uuid4().hex
        state = self._take(me)
        if state is None:
            return Runs(coalesced=True)
        runs: Runs[T] = Runs()
        last, took = state.last_start, 0.0
        try:
            while True:
                begin = max(self.clock(), (last or 0.0) + self.window)
                if runs.results and begin + 2 * took > until:
                    break  # no time for another round: the next invocation serves the wakes
                while (left := begin - self.clock()) > 0:  # the window, on the clock the lease records
                    self.sleep(left)
                started = self.lease.start(me)
                if started is None:
                    return runs  # the lease expired under this run and another took it
                last, served = started
                runs.wakes += served
                runs.results.append(task())
                took = self.clock() - last
                if self.lease.release(me):
                    return runs
        except BaseException:
            self.lease.release(me, force=True)
            raise
        self.lease.release(me, force=True)
        return runs


def run_scaler(settings: ScalerSettings, task: Callable[[], T], until: float) -> Runs[T]:
    """`task` under the scaler's lease when the deployment has one, else once."""
    coalescer = Coalescer.of(settings)
    if coalescer is None:
        return Runs(results=[task()])
    return coalescer.run(task, until)


class ScalerTrigger:
    """Runs the scaler function now (asynchronously), when the deployment names one. However
    many wakes come, the scaler's lease lets one run at a time through (`Coalescer`)."""

    def __init__(self, function_name: str | None) -> None:
        self.function_name = function_name

    def wake(self) -> bool:
        if not self.function_name:
            return False
        aws.client("lambda").invoke(FunctionName=self.function_name, InvocationType="Event", Payload=b"{}")
        return True
