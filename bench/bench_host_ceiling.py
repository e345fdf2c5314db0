"""Host ceiling: how fast the worker's host side goes when the model costs nothing.

The worker's whole path on the host runs as the worker runs it (gpu_container.worker.batches:
open and probe -> decode and VAD on each job's prefetch thread -> windows -> scheduler ->
the CTranslate2 runner with its batched log-mel prepared one batch ahead -> prompts, token
splitting, text -> assemble -> every output format rendered and written), with a zero-cost
model: the runner's encoder returns its input, its `generate` returns one fixed token
sequence per window at once (two sentences, ~30 tokens, no timestamp tokens, as the runner
decodes), and its word alignment spreads each window's words evenly over the window (the host
side of alignment: the tokens split into words, the words cut into segments), so what is
measured is everything but the GPU. AWS calls (claim, heartbeat, upload, commit) run beside the loop in
the worker and are not in it.

Figures, each the median of `--repeats` runs in this process (min, max and the runs kept):
- x realtime per CPU core = audio seconds / CPU seconds the process used (all its threads);
  a GPU worker on an instance with V vCPUs cannot go faster than about V times that (the cost
  model's host cap, bench/cost.py, reads the long-file figure);
- x realtime on this machine's wall clock, for reference;
- for long files (one `--long-seconds` mp3, 44.1 kHz, made from espeak speech) and for short
  jobs (`--short-jobs` ~10 s mp3 files, all held at once, as a GPU worker holds them);
- the CPU seconds of open + decode + VAD + windows alone over the same files, and their share of
  the whole path's (the rest: features, the runner's token work, assembly and outputs);
- log-mel alone: the library's extractor window by window against one batched call over
  `--mel-batch` 30 s windows, interleaved in the same process, ms per window.

    python -m bench.bench_host_ceiling                # ~3 min on 2 shared cores
    python -m bench.bench_host_ceiling --quick --out /tmp/h.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from batchscribe.whisper_models import SAMPLE_RATE, WINDOW_SECONDS
from bench.provenance import ROOT, load_average, record, stat
from harness.audio import SHORT_TEXT, convert, long_text, speak

OUT = ROOT / "bench" / "results" / "host-ceiling.json"


# ---- the zero-cost model ----------------------------------------------------------------------


def zero_cost_runner(batch_size: int) -> Any:
    """The worker's CTranslate2 runner over tiny.en's tokenizer and feature extractor, its
    encoder and decoder replaced by instant stand-ins (greedy, no fallback: a fixed sequence
    is never retried)."""
    from gpu_container.worker import whisper_lib
    from gpu_container.worker.batched import FasterWhisperBatchRunner
    from gpu_container.worker.engines import resolve_model

    model = whisper_lib.load_faster_whisper(
        resolve_model("tiny.en", None, False, None), device="cpu", compute_type="int8", cpu_threads=1
    )
    runner = FasterWhisperBatchRunner(model, model_name="tiny.en", device="cpu", beam_size=1)
    steps = runner.steps
    tok = steps.tokenizer("en", "transcribe")
    fixed = tok.encode(" The weather today is sunny and warm. We will meet at the office after lunch.")
    fixed += tok.encode(" Please send me the report by Friday.")

    def generate(encoder_output: Any, prompts: list[list[int]], *_: Any, **__: Any) -> list[Any]:
        return [whisper_lib.Generated(tokens=fixed, avg_logprob=-0.2, no_speech_prob=0.01) for _ in prompts]

    def align(segments: list[list[dict[str, Any]]], tokenizer: Any, *_: Any) -> None:
        for subs in segments:
            for sub in subs:
                if not sub["tokens"]:
                    continue
                words, _ = tokenizer.split_to_word_tokens(list(sub["tokens"]))
                step = (sub["end"] - sub["start"]) / max(1, len(words))
                sub["words"] = [
                    {
                        "word": w,
                        "start": sub["start"] + k * step,
                        "end": sub["start"] + (k + 1) * step,
                        "probability": 0.9,
                    }
                    for k, w in enumerate(words)
                ]

    steps.encode = lambda features: features
    steps.generate = generate
    steps.add_word_timestamps = align
    steps.detect_languages = lambda out: ["en"] * len(out)
    return runner.tune(temperatures=(0.0,))


# ---- the path -------------------------------------------------------------------------------------


def run_jobs(paths: list[Path], runner: Any, *, batch_size: int, out_dir: Path) -> dict[str, float]:
    """All `paths` held at once and run through the worker's path to written outputs; audio
    seconds, CPU seconds (the whole process) and wall seconds."""
    from gpu_container.worker.batched import DecodeOptions, assemble_stream
    from gpu_container.worker.batches import Batches
    from gpu_container.worker.scheduler import JobFailed
    from gpu_container.worker.transcript import CONTENT_TYPES, output_text
    from gpu_container.worker.windows import open_stream

    cpu0, wall0 = time.process_time(), time.perf_counter()
    batches = Batches(lambda _key: runner, batch_size=batch_size, read_ahead=8)
    streams = {}
    for i, path in enumerate(paths):
        streams[str(i)] = stream = open_stream(path, 4 * 3600.0, block_seconds=120)
        batches.add(str(i), ("faster-whisper", "tiny.en"), stream, DecodeOptions(language="en"))
    audio = 0.0
    while streams:
        step = batches.step()
        for event in step.events:
            if isinstance(event, JobFailed):
                raise event.error
            stream = streams.pop(event.job)
            transcript = assemble_stream(event.results, stream)
            for fmt in CONTENT_TYPES:
                (out_dir / f"{event.job}.{fmt}").write_text(output_text(transcript, fmt))  # type: ignore[arg-type]
            audio += transcript.duration
            stream.close()
        if not step.ran:
            time.sleep(0.002)  # decoding threads are behind: the worker waits the same way
    return {"audio_s": audio, "cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}


def windows_only(paths: list[Path]) -> float:
    """CPU seconds of open + decode + resample + VAD + cutting windows alone (no features, no
    runner, no outputs), one job after another in this thread."""
    from gpu_container.worker.windows import open_stream

    cpu0 = time.process_time()
    for path in paths:
        stream = open_stream(path, 4 * 3600.0, block_seconds=120)
        for _ in stream.windows():
            pass
        stream.close()
    return time.process_time() - cpu0


def scenario(paths: list[Path], runner: Any, batch_size: int, repeats: int) -> dict[str, Any]:
    """The paths through the whole path `repeats` times, and through decode + VAD + windows
    alone as many times, alternating (so background load hits both alike)."""
    runs, stream_cpu = [], []
    with tempfile.TemporaryDirectory() as tmp:
        run_jobs(paths[:1], runner, batch_size=batch_size, out_dir=Path(tmp))  # warm: imports, VAD model
        for _ in range(repeats):
            runs.append(run_jobs(paths, runner, batch_size=batch_size, out_dir=Path(tmp)))
            stream_cpu.append(windows_only(paths))
    audio = runs[0]["audio_s"]
    return {
        "jobs": len(paths),
        "audio_s_per_run": round(audio, 1),
        "xrt_per_core": stat([r["audio_s"] / r["cpu_s"] for r in runs], 1),
        "xrt_wall": stat([r["audio_s"] / r["wall_s"] for r in runs], 1),
        "cpu_s": stat([r["cpu_s"] for r in runs], 3),
        "decode_vad_windows_cpu_s": stat(stream_cpu, 3),
        "decode_vad_windows_share": round(
            statistics.median(stream_cpu) / statistics.median(r["cpu_s"] for r in runs), 3
        ),
    }


# ---- log-mel alone ----------------------------------------------------------------------------------


def mel_costs(batch: int, repeats: int) -> dict[str, Any]:
    """ms per 30 s window: the extractor window by window vs one batched call, interleaved."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from gpu_container.worker import features

    fe = FeatureExtractor(128)  # large-v3's 128 bands: the deployed model's
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(int(WINDOW_SECONDS * SAMPLE_RATE))).astype(np.float32) for _ in range(batch)]
    spec = features.MelSpec(fe.mel_filters)
    per, batched = [], []
    from faster_whisper.audio import pad_or_trim

    for _ in range(repeats):
        started = time.perf_counter()
        np.stack([pad_or_trim(fe(a)[..., :-1]) for a in audios])
        per.append((time.perf_counter() - started) / batch * 1000)
        started = time.perf_counter()
        features.log_mel_batch(audios, spec)
        batched.append((time.perf_counter() - started) / batch * 1000)
    return {
        "windows": batch,
        "n_mels": 128,
        "per_window_ms": stat(per, 2),
        "batched_ms_per_window": stat(batched, 2),
        "ratio_batched_to_per_window": round(statistics.median(batched) / statistics.median(per), 3),
    }


# ---- audio and the command line ----------------------------------------------------------------------


def make_audio(tmp: Path, long_seconds: float, short_jobs: int) -> tuple[Path, list[Path]]:
    """One long mp3 (a minute of espeak speech looped) and `short_jobs` copies of a ~10 s one."""
    minute = speak(long_text(60), tmp / "minute.wav")
    long = tmp / "long.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(minute),
         "-t", str(long_seconds), "-ar", "44100", "-b:a", "128k", str(long)],
        check=True,
    )  # fmt: skip
    short = convert(speak(SHORT_TEXT, tmp / "short.wav"), tmp / "short.mp3", "-ar", "44100", "-b:a", "128k")
    return long, [short] * short_jobs


def git_commit() -> str:
    """The commit measured (with `+dirty` when the tree has changes)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--long-seconds", type=float, default=600.0)
    p.add_argument("--short-jobs", type=int, default=64, help="~10 s jobs held at once (a GPU worker's K)")
    p.add_argument("--batch", type=int, default=64, help="B, windows per batch")
    p.add_argument("--mel-batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.long_seconds, args.short_jobs, args.batch, args.mel_batch, args.repeats = 40.0, 3, 4, 2, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started, load_start, commit = time.perf_counter(), load_average(), git_commit()
    runner = zero_cost_runner(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        long, shorts = make_audio(Path(tmp), args.long_seconds, args.short_jobs)
        result: dict[str, Any] = {
            "long_file": scenario([long], runner, args.batch, args.repeats),
            "short_jobs": scenario(shorts, runner, args.batch, args.repeats),
        }
    result["log_mel"] = mel_costs(args.mel_batch, max(3, args.repeats))
    result["features_prefetch"] = {
        "ready_rows": runner.features.ready_rows,
        "computed_rows": runner.features.computed_rows,
    }
    result["batch_size"] = args.batch
    result.update(record(started, load_start, argv))
    result["commit"] = commit
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("long_file", "short_jobs"):
        r = result[name]
        print(f"{name}: {r['xrt_per_core']['median']}x realtime per core, {r['xrt_wall']['median']}x on the wall clock")
    m = result["log_mel"]
    print(
        f"log-mel: {m['per_window_ms']['median']} ms/window one by one, {m['batched_ms_per_window']['median']} batched"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
