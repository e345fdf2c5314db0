"""Held jobs' windows through the model: the one transcription path.

`Batches` holds jobs' window streams, one scheduler per (engine, model), and runs one batch
per engine per `step()`, routing results to their jobs; it knows nothing of AWS. The
worker's loop steps it between taking ready jobs and handing finished ones on;
`transcribe_file` (what `batchscribe transcribe` runs) steps it with one job held. Both
therefore go media -> windows -> scheduler -> runner -> assemble the same way.

Short jobs' windows are packed into shared 30 s rows (packing.py, on unless `pack=False`): a
batch then holds as many windows as fit in B rows, and each job gets its own words back.

A batch short of B rows (its ready windows, packed, leave room in them) waits for jobs taken on
under FILL_WAIT_SECONDS ago whose first window is still being decoded, or claimed that recently
and still being prepared, at most FILL_WAIT_MAX_SECONDS in all (a burst of short jobs: run at
once, the first batch held one job and the next ones what happened to be ready; the rest waited
a whole batch for the next; a burst of more than the 10 messages SQS gives a receive reaches the
loop in waves, and with the wait capped at FILL_WAIT_SECONDS a burst of 16 ran as batches of 10
and 6; and counted in windows, not rows, 9 ready short windows were a "full" batch of B = 8
that packs into 4 rows: four 16-job mixes with every job held ran 8, 8, 6 and 9 encoder rows,
now 7, 6, 6 and 7). It never waits on a job that has yielded a window, so a long file being
transcribed holds nothing back, and a short job joining it gets into the next batch instead of
the one after.

B, the rows a batch holds, is sized from the GPU's free memory, the model and the beam when
the worker starts (`worker_batching`, the model in gpu_memory.py); a batch that still runs out of
GPU memory halves its engine's B for good, runs again at the new size, and says so once (a log
line and the WorkerBatchOutOfMemory metric).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from batchscribe.models import JobOptions
from batchscribe.settings import BATCH_OUT_OF_MEMORY_METRIC, METRICS_NAMESPACE, WORKER_METRICS_SERVICE, WorkerSettings
from batchscribe.whisper_models import LARGEST, WhisperDims, whisper_dims
from gpu_container.worker.batched import BatchRunner, DecodeOptions, assemble_stream, halve, run_isolating, runner_for
from gpu_container.worker.convert import read_dims
from gpu_container.worker.engines import Engine, resolve_model
from gpu_container.worker.errors import UnsupportedModel
from gpu_container.worker.gpu_memory import T4_BYTES, MemoryInfo, fit_batch, free_memory, row_bytes
from gpu_container.worker.log import logger
from gpu_container.worker.packing import Packer, packable, run_packed
from gpu_container.worker.scheduler import JobEvent, JobFailed, JobFinished, Scheduler
from gpu_container.worker.transcript import Transcript
from gpu_container.worker.windows import MediaStream, SplitStream, open_stream, prefetch

EngineKey = tuple[str, str]  # (engine, model)
MemoryProbe = Callable[[], MemoryInfo | None]
CPU_BATCH_SIZE = 2  # B on a CPU: see default_batching
DECODING_POLL_SECONDS = 0.01  # nothing to batch while every held job's next window is decoding
FILL_WAIT_SECONDS = 0.3  # a batch short of B waits for jobs added (or claimed) under this long ago...
FILL_WAIT_MAX_SECONDS = 1.0  # ...and while more keep coming, at most this long in all


def default_batching(
    device: str,
    model: str,
    *,
    beam_size: int = 5,
    engine: str = "faster-whisper",
    free_bytes: int | None = None,
    dims: WhisperDims | None = None,
    weights_loaded: bool = False,
) -> tuple[int, int]:
    """(K held jobs, B windows per batch) for a device and a model, when not configured.

    K: CPU 4; GPU 32 for a large model, 64 for the others (the stack sizes a worker's host memory
    and disk for the K it holds: stacks/sizing.py `held_jobs`, a test holds the two equal).
    B: CPU 2 (`CPU_BATCH_SIZE`: a short job joining a long file waits for the batch under way and
    shares its own with the long file's windows, both as long as B windows on a CPU; at B 8 a 4 s
    job took 4.0 s beside a 10 min file, at B 2 1.9 s, the long file no slower (10.0 s against
    11.5 s), with the engine's two CPU lanes, one window each at B 2: bench/results/
    short-behind-long-cpu.json; before the lanes, on an AMD EPYC, 20 s and 8.5 s). GPU: as many
    windows as fit
    in `free_bytes` of GPU memory beside the model's weights (gpu_memory.fit_batch; `dims` or the
    model's by name), a T4's 16 GB when nothing was measured. B no longer equals K: a batch takes
    several windows of a job, and the scheduler gives each held job its share of it.
    """
    if device != "cuda":
        return 4, CPU_BATCH_SIZE
    held = 32 if model.startswith("large") and "turbo" not in model else 64
    free = T4_BYTES if free_bytes is None else free_bytes
    weights_loaded = weights_loaded and free_bytes is not None
    size = fit_batch(free, dims or whisper_dims(model), beam_size, engine=engine, weights_loaded=weights_loaded)
    return held, size


def model_dims(model: str, model_path: str | None = None, model_dir: str | None = None) -> WhisperDims | None:
    """A model's dimensions: from its folder's model.bin where the worker has it, else the table
    (None for a name it does not know)."""
    with contextlib.suppress(UnsupportedModel, OSError, ValueError, KeyError):
        folder = Path(resolve_model(model, model_path, False, model_dir))
        return read_dims(folder)
    return whisper_dims(model)


def worker_batching(settings: WorkerSettings, device: str, probe: MemoryProbe | None = None) -> tuple[int, int]:
    """`default_batching` for a worker, at its start (before its engine loads): on CUDA, B from
    the device's free memory measured now and the model's own dimensions; one line logs them."""
    s = settings
    if device != "cuda":
        return default_batching(device, s.model)
    info = (probe or free_memory)()
    dims = model_dims(s.model, s.model_path, s.model_dir)
    held, size = default_batching(
        device, s.model, beam_size=s.beam_size, engine=s.engine, free_bytes=info.free if info else None, dims=dims
    )
    logger.info(
        "batch size from GPU memory" if info else "batch size for a T4 (no GPU memory probe answered)",
        extra={
            "model": s.model,
            "beam_size": s.beam_size,
            "free_gpu_bytes": info.free if info else None,
            "total_gpu_bytes": info.total if info else None,
            "probe": info.source if info else None,
            "row_bytes": row_bytes(dims or LARGEST, s.beam_size, s.engine),
            "batch_size": size,
        },
    )
    return held, size


def _engine_batch_size(engine: Engine) -> int:
    """B for an engine already loaded (`batchscribe transcribe`): its weights are in the used memory.
    On a CPU, the worker's CPU_BATCH_SIZE: one window a lane (engines.FasterWhisperEngine), which ran
    a 5 min file in 4.7 s where batches of 8 (4 a lane) took 5.4 s, and a 60 s file alike (0.88 s and
    0.86 s; Intel Xeon, 2 cores; before the lanes, one replica with both threads, 8 windows a batch
    had been the faster, ~0.75x the time of 2)."""
    if engine.device != "cuda":
        return CPU_BATCH_SIZE
    info = free_memory()
    return default_batching(
        "cuda",
        engine.model_name,
        beam_size=engine.beam_size,
        engine=engine.name,
        free_bytes=info.free if info else None,
        weights_loaded=True,
    )[1]


@dataclass
class Step:
    """What one step did: whether a batch ran, each job's share of the compute seconds, and
    the jobs that finished or failed (no longer held)."""

    ran: bool = False
    compute: dict[str, float] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)


class Batches:
    def __init__(
        self,
        runner: Callable[[EngineKey], BatchRunner],
        *,
        batch_size: int,
        read_ahead: int,
        memory_probe: MemoryProbe | None = None,
        pack: bool = True,
        fill_wait: float = FILL_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        arriving: Callable[[float], bool] = lambda _within: False,
    ) -> None:
        self._runner = runner
        self.fill_wait = fill_wait
        self.arriving = arriving  # jobs claimed under that long ago still being prepared (the worker's admission)
        self._clock = clock
        self._added: dict[str, float] = {}  # when each job was taken on (for the fill wait)
        self._waiting: dict[EngineKey, float] = {}  # since when a short batch has waited, per engine
        self._packer = Packer() if pack else None  # short jobs' windows share rows (packing.py)
        self.batch_size = batch_size  # B at the start, for every engine
        self.read_ahead = read_ahead
        self._free_memory = memory_probe or (lambda: free_memory())  # looked up when asked
        self._schedulers: dict[EngineKey, Scheduler[Any, Any]] = {}
        self._key: dict[str, EngineKey] = {}
        self._sizes: dict[EngineKey, int] = {}  # B of an engine whose batch ran out of GPU memory
        self._ahead: dict[EngineKey, list[Any]] = {}  # the next batch per engine, its features in preparation

    def add(
        self, job: str, key: EngineKey, stream: MediaStream | SplitStream, options: DecodeOptions, priority: int = 0
    ) -> None:
        """Hold a job: its windows decoded ahead on their own thread, batched with the others
        of its engine (lower `priority` first)."""
        if key not in self._schedulers:
            self._schedulers[key] = Scheduler(read_ahead=self.read_ahead)
        depth = max(2, min(self.read_ahead, self.batch_size))  # a job alone can fill a batch
        self._schedulers[key].add(
            job, prefetch(stream.windows(), depth), options=options, priority=priority, expected_seconds=stream.duration
        )
        self._key[job] = key
        self._added[job] = self._clock()

    def remove(self, job: str) -> None:
        """Let go of a job (cancelled, taken over, the worker stops): its windows dropped."""
        key = self._key.pop(job, None)
        self._added.pop(job, None)
        if key is not None:
            self._schedulers[key].remove(job)

    def __contains__(self, job: object) -> bool:
        return job in self._key

    def __len__(self) -> int:
        return len(self._key)

    def size(self, key: EngineKey) -> int:
        """B for an engine now: `batch_size` until one of its batches ran out of GPU memory, the
        halved size from then on (never grown back: the memory it needed is not coming back)."""
        return self._sizes.get(key, self.batch_size)

    def progress(self, job: str) -> float:
        """Source seconds transcribed without a gap from the job's start."""
        key = self._key.get(job)
        return self._schedulers[key].progress(job) if key is not None else 0.0

    def step(self) -> Step:
        """One batch per engine that has windows ready; results routed to their jobs."""
        step = Step()
        for key, scheduler in self._schedulers.items():
            if not len(scheduler):
                self._ahead.pop(key, None)
                continue
            batch = self._next_batch(key, scheduler) if self._ready_to_run(key, scheduler) else []
            if batch:
                started = time.perf_counter()
                run = partial(run_isolating, limit=self.size(key), on_oom=partial(self._out_of_memory, key))
                runner = self._runner(key)
                packer = self._packer
                results = run_packed(runner, batch, run, packer.rows(batch)) if packer else run(runner, batch)
                share = (time.perf_counter() - started) / len(batch)
                for work in batch:
                    step.compute[work.job] = step.compute.get(work.job, 0.0) + share
                scheduler.complete(batch, results)
                step.ran = True
            for event in scheduler.events():
                self._key.pop(event.job, None)
                self._added.pop(event.job, None)
                step.events.append(event)
        return step

    def _ready_to_run(self, key: EngineKey, scheduler: Scheduler[Any, Any]) -> bool:
        """False while a batch short of B waits for jobs added under `fill_wait` ago whose first
        window is still decoding, or jobs claimed that recently still being prepared (`arriving`:
        a burst's jobs reach the loop one by one as their downloads end); never longer than
        FILL_WAIT_MAX_SECONDS in all (nor than `fill_wait` where that is longer)."""
        if self.fill_wait <= 0:
            return True
        now, size = self._clock(), self.size(key)
        coming = self.arriving(self.fill_wait)
        if not coming and not any(now - t < self.fill_wait for t in self._added.values()):
            self._waiting.pop(key, None)
            return True  # no job just taken on: nothing to look for (the loop's usual step)
        scheduler.refill(size)
        starting = [j for j in scheduler.starting() if now - self._added.get(j, now) < self.fill_wait]
        ready = [*self._ahead.get(key, []), *scheduler.ready_work()]
        if not (starting or coming) or not ready or self._full(ready, size):
            self._waiting.pop(key, None)
            return True
        since = self._waiting.setdefault(key, now)
        if now - since >= max(self.fill_wait, FILL_WAIT_MAX_SECONDS):
            del self._waiting[key]
            return True
        return False

    def _next_batch(self, key: EngineKey, scheduler: Scheduler[Any, Any]) -> list[Any]:
        """The batch to run now (the one chosen a step ago, topped up to B, its windows of jobs
        since let go dropped), and the one after it chosen now so that the runner can prepare
        its features while this one runs (a runner with `prepare`; features.FeaturePrefetch)."""
        size = self.size(key)
        batch = [w for w in self._ahead.pop(key, []) if w.job in scheduler]
        held, room = list(batch), self._room(size)
        batch += scheduler.next_batch(size, lambda more: room([*held, *more]))
        prepare = getattr(self._runner(key), "prepare", None)
        if batch and prepare is not None:
            upcoming = scheduler.next_batch(size, self._room(size))
            if upcoming:
                self._ahead[key] = upcoming
                prepare(self._packer.ahead(upcoming) if self._packer else upcoming)
        return batch

    def _full(self, ready: Sequence[Any], size: int) -> bool:
        """Whether the (non-empty) ready windows fill a batch of `size`: one more would not fit
        it (the scheduler's own test, `_room`), that one as short as the shortest packable window
        ready (a burst's jobs are alike), or any window where none packs."""
        extra = min((w for w in ready if packable(w)), key=lambda w: w.window.duration, default=ready[0])
        return not self._room(size)([*ready, extra])

    def _room(self, size: int) -> Callable[[Sequence[Any]], bool]:
        """The scheduler's test that a batch still fits: `size` rows once packed, else `size` windows."""
        return self._packer.fits(size) if self._packer else (lambda batch: len(batch) <= size)

    def _out_of_memory(self, key: EngineKey, failed: int, error: BaseException) -> int:
        """`failed` windows of `key`'s engine ran out of GPU memory together: its B becomes half
        of them for good (one window alone fails, through the job's error path). One log line
        and one metric each time."""
        was = self.size(key)
        self._sizes[key] = size = min(was, halve(failed, error))
        info = self._free_memory()
        logger.warning(
            "out of GPU memory: batch size halved" if failed > 1 else "out of GPU memory on one window: it fails",
            extra={
                "engine": key[0],
                "model": key[1],
                "batch_size_was": was,
                "batch_size": size,
                "windows": failed,
                "free_gpu_bytes": info.free if info else None,
                "error": f"{type(error).__name__}: {error}"[:300],
            },
        )
        with single_metric(
            name=BATCH_OUT_OF_MEMORY_METRIC,
            unit=MetricUnit.Count,
            value=1,
            namespace=METRICS_NAMESPACE,
            default_dimensions={"service": WORKER_METRICS_SERVICE},
        ):
            pass
        return size


def transcribe_file(
    path: Path,
    options: JobOptions,
    engine: Engine,
    *,
    max_duration_seconds: float,
    batch_size: int | None = None,
    read_ahead: int = 8,
    block_seconds: float = 120,
    on_progress: Callable[[float, float], None] = lambda _done, _total: None,
) -> Transcript:
    """One file through the worker's path with one job held: open (probe) -> windows ->
    scheduler -> the engine's batch runner -> assemble. Raises the job's failure
    (PermanentJobError for bad media). `on_progress(done, total)` gets source seconds
    transcribed and to transcribe (over all channels, when they are transcribed apart)."""
    stream = open_stream(
        path, max_duration_seconds, split_channels=options.channels == "split", block_seconds=block_seconds
    )
    runner = runner_for(engine)
    size = batch_size or _engine_batch_size(engine)
    batches = Batches(lambda _key: runner, batch_size=size, read_ahead=read_ahead)
    batches.add("file", (engine.name, engine.model_name), stream, DecodeOptions.from_job(options))
    try:
        while True:
            step = batches.step()
            for event in step.events:
                if isinstance(event, JobFailed):
                    raise event.error
                assert isinstance(event, JobFinished)
                transcript = assemble_stream(event.results, stream)
                return transcript.model_copy(update={"engine": engine.name, "model": engine.model_name})
            on_progress(batches.progress("file"), stream.work_seconds)
            if not step.ran:
                time.sleep(DECODING_POLL_SECONDS)
    finally:
        batches.remove("file")
        stream.close()
