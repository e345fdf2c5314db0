"""The worker: it holds up to K claimed jobs and keeps the accelerator busy with batches of
their 30 s windows. Stateless; any number run side by side.

Each held job is a short pipeline of its own, `claim -> download -> open (probe) -> windows
-> assemble -> write outputs -> commit -> delete`, with its own claim and fencing attempt,
heartbeat (lease, message visibility, progress, cancel detection), log and failure code.
The parts, each handed what it needs and none reaching back into the worker:
- admission.py (a thread): receive while the free disk takes another job (disk.py), claim
  (claiming.py; the job's disk reserved), start the job's log and heartbeat
  (running.py), download and probe on the preparing pool (preparing.py), hand the ready job
  over through the gate (handoff.py);
- this loop: takes ready jobs, runs batches (batches.py: a pure scheduler fills batches of
  up to B windows from all held jobs, a runner transcribes them), routes results, and hands
  each job it lets go of to the finishing pool;
- finishing.py (the finishing pool): commit, failure classification, release, give-back.
The loop itself makes no AWS call: the model never waits for a claim, a log write or a
commit. Claiming goes on as jobs finish (continuous batching), so a long file never holds
short ones back. With K = 1 the worker runs one job at a time.

Before its first claim (starting.py): its device (the GPU preflight, preflight.py; with
device=auto, which device and why) and its engine loaded with the pool's model. A worker that
cannot start logs one line naming the cause and exits with its code (WorkerExit), having received
no message. A job asking for another model has it loaded before its claim; a worker that cannot
load it leaves the job queued, unclaimed (claiming.py).

SIGTERM (Spot reclaim, Batch timeout): stop claiming, give every unfinished job back with its
message visible at once, exit 0. After the idle period with nothing held: exit 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from batchscribe.models import PRIORITIES, Job
from batchscribe.queue import ClassQueues, Received
from batchscribe.repository import Counters, JobRepository
from batchscribe.resources import WorkerExit
from batchscribe.settings import ConfigError, WorkerSettings
from batchscribe.storage import MediaStore
from batchscribe.urlguard import Resolver, system_resolver
from gpu_container.worker.admission import Admission
from gpu_container.worker.batched import BatchRunner, DecodeOptions, runner_for
from gpu_container.worker.batches import (
    DECODING_POLL_SECONDS,
    Batches,
    EngineKey,
    Step,
    default_batching,
    worker_batching,
)
from gpu_container.worker.claiming import Claimer
from gpu_container.worker.disk import DiskBudget, DiskUsage, JobFiles
from gpu_container.worker.engines import Engine, load_engine
from gpu_container.worker.errors import EngineUnavailable, PermanentJobError
from gpu_container.worker.finishing import Finisher
from gpu_container.worker.handoff import Gate
from gpu_container.worker.preflight import CudaProbe, Probe, choose_device
from gpu_container.worker.preparing import Preparer
from gpu_container.worker.progress import Speed
from gpu_container.worker.running import JobRun, Outcome, logger, start_run
from gpu_container.worker.scheduler import JobFailed
from gpu_container.worker.starting import CannotStart, log_device

__all__ = ["Outcome", "Worker", "default_batching", "main"]

EngineLoader = Callable[[str, str], Engine]
RunnerFactory = Callable[[Engine], BatchRunner]
IDLE_WAIT_SECONDS = 0.05  # the loop looks for ready jobs, the stop signal and the idle exit this often


# jobs committed at once (each a few uploads and AWS calls; a batch's jobs end together: 16 on 8
# threads took two rounds)
FINISHING_THREADS = 16


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        engine_loader: EngineLoader | None = None,
        runner_factory: RunnerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        resolver: Resolver = system_resolver,
        disk_usage: DiskUsage = shutil.disk_usage,
        probe: Probe | None = None,
    ) -> None:
        s = self.settings = settings
        self.worker_id = settings.worker_name
        self.repo = JobRepository(s.table_name)
        self.store = MediaStore(s.bucket_name)
        # its pool's priority classes, received from in a weighted order (batchscribe.queue)
        self.queue = ClassQueues(s.jobs_queue_url, s.class_queue_urls)
        self.stopping = threading.Event()
        self.outcomes: list[Outcome] = []
        # the GPU preflight runs here (the device decides the batching); its verdict at run()
        self.device_choice = choose_device(s.device, s.compute_type, probe or CudaProbe(s.engine))
        log_device(self.device_choice)
        if self.device_choice.failed is None:
            k, b = worker_batching(s, self.device)  # B from the GPU's free memory (gpu_memory.py)
        else:  # it will not run: run() stops at the preflight with its one line, and only that
            k, b = default_batching(self.device, s.model)
        self.max_held = s.max_held_jobs or k
        self.batch_size = s.batch_size or b
        self._engine_loader = engine_loader or self._load_engine
        self._runner_factory = runner_factory or runner_for
        self._engines: dict[EngineKey, Engine] = {}
        self._unloadable: dict[EngineKey, str] = {}  # engines that failed to load here, and why
        self._runners: dict[EngineKey, BatchRunner] = {}
        self._engine_lock = threading.Lock()
        self.gate: Gate[JobRun] = Gate(
            max_held=self.max_held,
            max_jobs=s.max_jobs,
            idle_exit_seconds=s.timings.idle_exit_seconds,
            clock=clock,
            stop=self.stopping,
        )
        self.batches = Batches(
            self._runner,
            batch_size=self.batch_size,
            read_ahead=s.read_ahead,
            arriving=lambda within: self.admission.arriving(within),
        )
        self._held: dict[str, JobRun] = {}  # in the loop: the loop thread's own
        self.disk = DiskBudget(
            s.work_dir or tempfile.gettempdir(),
            floor=s.disk_floor_mb * 1024 * 1024,
            max_input_bytes=s.max_input_bytes,
            disk_usage=disk_usage,
        )
        self.speed = Speed()  # this worker's pace, for its jobs' progress between batches
        self.finisher = Finisher(self.repo, self.queue, self.store, s.instance_hourly_usd, s.max_attempts)
        self._finishing = ThreadPoolExecutor(max_workers=FINISHING_THREADS, thread_name_prefix="finishing")
        self.admission = self._admission(resolver)

    def _admission(self, resolver: Resolver) -> Admission:
        s, t = self.settings, self.settings.timings
        claimer = Claimer(
            self.repo,
            Counters(s.table_name),
            self.queue,
            self.disk,
            worker_id=self.worker_id,
            lease_seconds=t.lease_seconds,
            owner_cap=s.max_running_per_owner,
            owner_cap_delay_seconds=s.owner_cap_delay_seconds,
            engine_ready=self._engine_ready,
        )
        preparer = Preparer(s, self.store, self.repo, self._engine_for, resolver, stopping=lambda: self.gate.closed)
        return Admission(
            self.gate,
            self.queue,
            claimer,
            self._start,
            preparer,
            self.finisher,
            self.disk,
            poll_seconds=t.poll_seconds,
            record=self.outcomes.append,
        )

    def _start(self, job: Job, received: Received, files: JobFiles) -> JobRun:
        return start_run(
            job,
            received,
            files,
            worker=self.worker_id,
            key=self._key(job),
            store=self.store,
            repo=self.repo,
            queue=self.queue,
            timings=self.settings.timings,
            speed=self.speed,
        )

    # ---- what tests and callers look at ---------------------------------------------------

    @property
    def jobs_done(self) -> int:
        """Jobs claimed."""
        return self.gate.claims

    def held(self, job_id: str) -> JobRun | None:
        """A job in the model loop (None once it left it, or before it got there)."""
        return self._held.get(job_id)

    def handle(self, received: Received) -> Outcome:
        """Claim the job one message names and start preparing it (or say why not)."""
        return self.admission.take(received)

    # ---- lifecycle -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))

    def request_stop(self, why: str = "stop requested") -> None:
        logger.info("stopping: claiming nothing new, giving back what is held", extra={"reason": why})
        self.stopping.set()

    def run(self) -> int:
        """Prove the device and load the engine, then work until idle, stopped or at the job cap;
        the exit code (WorkerExit) says which."""
        try:
            self._prove()
        except CannotStart as exc:
            exc.log(worker=self.worker_id, engine=self.settings.engine, model=self.settings.model, device=self.device)
            return int(exc.code)
        s = self.settings
        logger.info(
            "worker started",
            extra={
                "worker": self.worker_id,
                "engine": s.engine,
                "model": s.model,
                "device": self.device,
                "uid": os.getuid(),
                "held_jobs": self.max_held,
                "batch_size": self.batch_size,
                "lanes": getattr(self._engine_for((s.engine, s.model)), "lanes", 1),  # loaded by _prove
                "disk_capacity_bytes": self.disk.capacity,
                "largest_job_bytes": self.disk.largest,
            },
        )
        self.gate.open()
        self.admission.start()
        try:
            while not self.stopping.is_set():
                reason = self.gate.close_if_done()
                if reason is not None:
                    logger.info(EXIT_REASONS[reason], extra={"jobs": self.jobs_done})
                    break
                self._take_ready()
                self._drop_interrupted()
                step = self.batches.step()
                self._route(step)
                if not step.ran:
                    self.gate.wait_ready(DECODING_POLL_SECONDS if self._held else IDLE_WAIT_SECONDS)
        finally:
            self._shut_down()
        logger.info("worker stopped", extra={"jobs": self.jobs_done})
        return int(WorkerExit.DONE)

    def _prove(self) -> None:
        """Before the first claim: a GPU that failed its preflight, or an engine that does not
        load the pool's model, ends the worker here (CannotStart)."""
        failed = self.device_choice.failed
        if self.device == "cuda" and failed is not None:
            raise CannotStart.preflight(failed)
        s = self.settings
        try:
            self._engine_for((s.engine, s.model))
        except Exception as exc:
            raise CannotStart.engine(s.engine, s.model, self.device, exc) from exc

    # ---- the loop's steps (no AWS call among them) ----------------------------------------

    def _take_ready(self) -> None:
        for run in self.gate.take():
            self._held[run.job_id] = run
            assert run.stream is not None  # prepared
            # batches fill in the same order as claims: high, normal, low (0 runs first)
            priority = PRIORITIES.index(run.job.priority)
            self.batches.add(run.job_id, run.key, run.stream, DecodeOptions.from_job(run.job.options), priority)

    def _drop_interrupted(self) -> None:
        """Jobs cancelled or taken over since the last batch leave the batches at once (their
        slots freed together, as a batch's finished jobs free theirs)."""
        going = [r for r in self._held.values() if r.beat.interrupted]
        for run in going:
            self.batches.remove(run.job_id)
        self._let_go(*((run, self.finisher.interrupted) for run in going))

    def _route(self, step: Step) -> None:
        for job_id, seconds in step.compute.items():
            if job_id in self._held:
                self._held[job_id].compute_seconds += seconds
        going: list[tuple[JobRun, Callable[[JobRun], Outcome]]] = []
        for event in step.events:
            run = self._held.get(event.job)
            if run is None:
                continue
            if isinstance(event, JobFailed):
                going.append((run, partial(self.finisher.failed, error=event.error)))
            elif run.beat.interrupted:
                going.append((run, self.finisher.interrupted))
            else:
                # from here the commit's condition decides (a cancel that lands now loses
                # the race or wins it, and then the outputs are removed)
                going.append((run, partial(self.finisher.finish, results=event.results)))
        # a batch's jobs free their slots together: one receive then claims them all (let go
        # one at a time, the first freed slot was claimed alone, prepared, and ran a batch alone)
        self._let_go(*going)
        for run in self._held.values():
            if run.work_seconds > 0:
                run.beat.pace.advance(self.batches.progress(run.job_id), run.work_seconds)

    def _let_go(self, *going: tuple[JobRun, Callable[[JobRun], Outcome]]) -> None:
        """Jobs leave the loop for the finishing pool (each `how` it is finished)."""
        if not going:
            return
        for run, _ in going:
            del self._held[run.job_id]
        self.gate.to_finishing(len(going))
        for run, how in going:
            self._finishing.submit(self._finish, run, how)

    def _finish(self, run: JobRun, how: Callable[[JobRun], Outcome]) -> None:
        try:
            self.outcomes.append(how(run))
        except Exception:
            logger.exception("finishing a job raised", extra={"job_id": run.job_id})
        finally:
            self.gate.finished()

    def _shut_down(self) -> None:
        """SIGTERM or the end of the loop: claim nothing more; every job still held goes
        back, visible at once (each on its own: one's trouble does not keep the others), then
        those the admission side still had (it gives back what it claims or prepares from
        now on); jobs being finished are finished."""
        self.gate.close()
        for run in list(self._held.values()):
            self.batches.remove(run.job_id)
            del self._held[run.job_id]
            self._give_back(run)
        self.admission.join()
        for run in self.gate.take():  # handed over after the loop's last look
            self._give_back(run)
        self._finishing.shutdown(wait=True)

    def _give_back(self, run: JobRun) -> None:
        try:
            self.outcomes.append(self.finisher.shut_down(run))
        except Exception:
            logger.exception("could not give a job back on the way out", extra={"job_id": run.job_id})
        finally:
            self.gate.done()

    # ---- engines ---------------------------------------------------------------------------

    def _runner(self, key: EngineKey) -> BatchRunner:
        if key not in self._runners:
            self._runners[key] = self._runner_factory(self._engine_for(key))
        return self._runners[key]

    @property
    def device(self) -> str:
        """`cpu` or `cuda`: what the `device` setting became (preflight.choose_device)."""
        return self.device_choice.device

    def _key(self, job: Job) -> EngineKey:
        return (self.settings.engine, job.options.model or self.settings.model)

    def _engine_ready(self, job: Job) -> str | None:
        """Before a job's claim: None when its engine is loaded (loading it now if need be), or
        cannot be for the job's own reason (a model the pool does not have: the claim goes on and
        the job fails `unsupported_model`); else why this worker cannot load it (the job is left
        queued, unclaimed, and no load happens inside a job)."""
        try:
            self._engine_for(self._key(job))
        except PermanentJobError:
            return None
        except Exception as exc:
            return str(exc) if isinstance(exc, EngineUnavailable) else f"{type(exc).__name__}: {exc}"
        return None

    def _engine_for(self, key: EngineKey) -> Engine:
        """The loaded engine for `key`, loaded on first use; one that failed to load here is not
        tried again (EngineUnavailable)."""
        with self._engine_lock:  # preparing threads may ask for the same engine at once
            if key in self._unloadable:
                raise EngineUnavailable(self._unloadable[key])
            if key not in self._engines:
                try:
                    self._engines[key] = self._engine_loader(*key)
                except PermanentJobError:
                    raise
                except Exception as exc:
                    self._unloadable[key] = f"{key[0]} could not load {key[1]}: {type(exc).__name__}: {exc}"
                    raise  # the caller says it: the worker's one line at start, the claim's warning later
            return self._engines[key]

    def _load_engine(self, engine: str, model: str) -> Engine:
        s = self.settings
        return load_engine(
            engine,
            model=model,
            model_path=s.model_path if model == s.model else None,
            device=self.device,
            compute_type=s.compute_type,
            cpu_threads=s.cpu_threads,
            lanes=s.cpu_lanes,
            beam_size=s.beam_size,
            allow_download=s.allow_download,
            model_dir=s.model_dir,
            cache_dir=s.cache_dir,
        )


EXIT_REASONS = {
    "max_jobs": "took its maximum number of jobs; exiting",
    "idle": "idle; exiting so the compute environment can scale to zero",
}


def main() -> int:
    try:
        settings = WorkerSettings.from_env()
    except ConfigError as exc:  # one log line naming what to set, not a traceback
        CannotStart(WorkerExit.CONFIG, "settings", str(exc), "fix the job definition's environment").log()
        return int(WorkerExit.CONFIG)
    worker = Worker(settings)
    worker.install_signal_handlers()
    return worker.run()
