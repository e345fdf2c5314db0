"""Cross-job batching against one job at a time, in one process, on the same audio.

16 short espeak jobs (5-15 s each) go through (a) the library's own transcribe, one job after
another (`media.decode` + `whisper_lib.library_transcribe`: faster-whisper's or openai-whisper's
`transcribe` on the engine's model), and (b) the batched path (`windows.open_media` ->
`scheduler.Scheduler` -> a batched runner, batches of `--batch-size`), alternating (a) and
(b) `--repeats` times so background load hits both alike. Prints each path's median
seconds and word error rate, then `throughput ratio: X.XX\u00d7` (sequential seconds / batched
seconds) as the last line; also each path's process CPU seconds, which other load on a
shared machine disturbs less than wall time. A measurement, not a test.

    python -m bench.bench_batching                       # faster-whisper, B=16
    python -m bench.bench_batching --engine openai-whisper --batch-size 8
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from batchscribe.models import ENGINE_NAMES
from gpu_container.worker.batched import (
    BatchRunner,
    DecodeOptions,
    FasterWhisperBatchRunner,
    OpenAIWhisperBatchRunner,
    assemble,
)
from gpu_container.worker.engines import Engine, FasterWhisperEngine, OpenAIWhisperEngine
from gpu_container.worker.media import decode
from gpu_container.worker.scheduler import JobFinished, Scheduler
from gpu_container.worker.windows import open_media
from harness.audio import SENTENCES, speak, spoken_words


def make_jobs(root: Path, n: int, seed: int = 7) -> dict[str, tuple[str, Path]]:
    """n jobs of 2-4 distinct sentences each (about 5-15 s of speech)."""
    rng = random.Random(seed)
    jobs = {}
    for i in range(n):
        text = " ".join(rng.sample(SENTENCES, rng.randint(2, 4)))
        jobs[f"job{i:02d}"] = (text, speak(text, root / f"job{i:02d}.wav"))
    return jobs


def wer(jobs: dict[str, tuple[str, Path]], texts: dict[str, str]) -> float:
    import jiwer

    refs = [spoken_words(jobs[j][0]) for j in sorted(jobs)]
    hyps = [spoken_words(texts[j]) for j in sorted(jobs)]
    return float(jiwer.wer(refs, hyps))


def sequential(engine: Engine, jobs: dict[str, tuple[str, Path]]) -> dict[str, str]:
    from gpu_container.worker.whisper_lib import library_transcribe

    out = {}
    for job, (_, path) in jobs.items():
        audio = decode(path, 600)
        out[job] = library_transcribe(engine, audio.samples, language="en")
    return out


def batched(runner: BatchRunner, jobs: dict[str, tuple[str, Path]], batch_size: int) -> dict[str, str]:
    scheduler: Scheduler[Any, Any] = Scheduler(read_ahead=batch_size)
    streams = {}
    for job, (_, path) in jobs.items():
        streams[job] = stream = open_media(path, 600)
        scheduler.add(job, stream.windows(), options=DecodeOptions(language="en"), expected_seconds=stream.duration)
    out = {}
    while len(scheduler):
        batch = scheduler.next_batch(batch_size)
        if batch:
            scheduler.complete(batch, runner.run(batch))
        for event in scheduler.events():
            assert isinstance(event, JobFinished), event
            out[event.job] = assemble(event.results, streams[event.job].decoded_seconds).text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="faster-whisper")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--beam-size", type=int, default=5)
    args = parser.parse_args()

    engine: Engine
    runner: BatchRunner
    if args.engine == "faster-whisper":
        # the library's transcribe on the model as it loads it by default (one replica, every
        # thread: its loop runs one call at a time); the batched path on the worker's engine
        # (its CPU lanes)
        engine = FasterWhisperEngine(device=args.device, beam_size=args.beam_size, lanes=1)
        fw = FasterWhisperEngine(device=args.device, beam_size=args.beam_size)
        runner = FasterWhisperBatchRunner.from_engine(fw)
    else:
        ow = OpenAIWhisperEngine(device=args.device, beam_size=args.beam_size)
        engine, runner = ow, OpenAIWhisperBatchRunner.from_engine(ow)

    with tempfile.TemporaryDirectory() as tmp:
        jobs = make_jobs(Path(tmp), args.jobs)
        seconds = sum(decode(p, 600).duration for _, p in jobs.values())
        warm = dict(list(jobs.items())[:1])
        sequential(engine, warm)  # warm up both paths (model caches, VAD session)
        batched(runner, warm, args.batch_size)
        times: dict[str, list[float]] = {"sequential": [], "batched": []}
        cpu: dict[str, list[float]] = {"sequential": [], "batched": []}
        texts: dict[str, dict[str, str]] = {}
        for _ in range(args.repeats):
            for name in ("sequential", "batched"):
                started, cpu_started = time.perf_counter(), time.process_time()
                texts[name] = (
                    sequential(engine, jobs) if name == "sequential" else batched(runner, jobs, args.batch_size)
                )
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - cpu_started)

    print(
        f"{len(jobs)} jobs, {seconds:.0f} s of speech, {args.engine} {engine.model_name} on {engine.device}, "
        f"beam {args.beam_size}, batch size {args.batch_size}, median of {args.repeats}"
    )
    for name in ("sequential", "batched"):
        median = statistics.median(times[name])
        print(
            f"  {name:<10} {median:7.2f} s  ({seconds / median:5.1f}x realtime)  WER {wer(jobs, texts[name]):.3f}  "
            f"runs {[round(t, 2) for t in times[name]]}  process CPU {statistics.median(cpu[name]):.2f} s"
        )
    cpu_ratio = statistics.median(cpu["sequential"]) / statistics.median(cpu["batched"])
    print(f"CPU-time ratio (less sensitive to other load on the machine): {cpu_ratio:.2f}")
    ratio = statistics.median(times["sequential"]) / statistics.median(times["batched"])
    print(f"throughput ratio: {ratio:.2f}\u00d7")


if __name__ == "__main__":
    main()
