"""A short job held next to a long file on a CPU worker: how long the short one takes, and what
the long file's throughput costs, for each batch size B, in one process on the same audio.

The worker's path without AWS: windows.open_media -> scheduler -> FasterWhisperBatchRunner
(tiny.en, int8, 2 threads). The long file starts alone; after its first batch the short job
joins (as a job claimed while the worker runs). Recorded per B: the short job's seconds from
joining to its last result, and the long file's seconds and x realtime. A measurement, not a test.

    python -m bench.bench_short_behind_long --batch-sizes 1 2 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.provenance import ROOT, load_average, record
from gpu_container.worker.batched import DecodeOptions, FasterWhisperBatchRunner, run_isolating
from gpu_container.worker.engines import FasterWhisperEngine
from gpu_container.worker.scheduler import Scheduler
from gpu_container.worker.windows import open_media
from harness.audio import SHORT_TEXT, long_text, speak


def run(size: int, long: Path, short: Path, runner: FasterWhisperBatchRunner) -> dict[str, Any]:
    scheduler: Scheduler[Any, Any] = Scheduler(read_ahead=8)
    options = DecodeOptions()
    stream = open_media(long, 3600)
    scheduler.add("long", stream.windows(), options=options, expected_seconds=stream.duration)
    started, joined, done = time.perf_counter(), 0.0, {}
    while len(scheduler):
        batch = scheduler.next_batch(size)
        if batch:
            scheduler.complete(batch, run_isolating(runner, batch))
        if not joined:  # after the first batch: a short job claimed meanwhile
            s = open_media(short, 3600)
            scheduler.add("short", s.windows(), options=options, expected_seconds=s.duration)
            joined = time.perf_counter()
        for event in scheduler.events():
            done[event.job] = time.perf_counter()
    return {
        "batch_size": size,
        "short_job_s": round(done["short"] - joined, 2),
        "long_file_s": round(done["long"] - started, 2),
        "long_file_x_realtime": round((stream.duration or 0.0) / (done["long"] - started), 2),
        "long_file_audio_s": round(stream.duration or 0.0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--long-seconds", type=float, default=180)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started, load_start = time.perf_counter(), load_average()
    root = Path(tempfile.mkdtemp())
    long, short = speak(long_text(args.long_seconds), root / "long.wav"), speak(SHORT_TEXT, root / "short.wav")
    runner = FasterWhisperBatchRunner.from_engine(FasterWhisperEngine(device="cpu", cpu_threads=2))
    rows = []
    for size in args.batch_sizes:
        rows.append(run(size, long, short, runner))
        print(rows[-1], flush=True)
    out = args.out or ROOT / "bench" / "results" / "short-behind-long-cpu.json"
    out.write_text(json.dumps({**record(started, load_start, argv), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
