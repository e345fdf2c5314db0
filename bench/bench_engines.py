"""Engine benchmark: openai-whisper (the baseline), faster-whisper sequential, faster-whisper's
batched pipeline (BatchedInferencePipeline) and the worker's own batched runner (windows ->
scheduler -> FasterWhisperBatchRunner, as the worker runs one job), on the same espeak files
(a 60 s and a 5 min one by default), on the same machine, in one run.

Each variant runs in a child process of its own per round, so its import and model-load time
and its memory are its own: the child imports the engine's library (import_s), loads the model
(load_s includes the import), warms up on a short file, then transcribes each file (wall time,
process CPU seconds over all its threads). Peak RSS is read from /proc/self/status (VmHWM),
reset between phases (/proc/self/clear_refs), so each file's peak is its own; the process peak
is the largest. Rounds rotate the variants' order so background load hits all alike; every
figure is the median (with min, max and the number of runs) over rounds, and each is also a
ratio to openai-whisper *in the same round* (paired, then the median of the ratios). WER is
against the text espeak spoke. Results: bench/results/engines-<device>.json, with the command,
the machine, its load average and the date. The children run with OMP_WAIT_POLICY=PASSIVE
(`child_env`). openai-whisper takes most of the time: 3 rounds took 12 min on 2 cores at a load
average of 5-10 (others' test runs), a few minutes on an idle machine. A measurement, not a test.

    python -m bench.bench_engines                          # 60 s and 5 min files, 3 rounds
    python -m bench.bench_engines --budget-minutes 5       # as many of the 3 rounds as fit in ~5 min (at least 1)
    python -m bench.bench_engines --seconds 60 --repeats 5
    python -m bench.bench_engines --quick --out /tmp/e.json   # one 5 s file, one round (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.provenance import load_average, record, stat
from harness.audio import spoken_words

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
BASELINE = "openai-whisper"
VARIANTS: dict[str, str] = {
    "openai-whisper": "openai-whisper (PyTorch, fp32 on CPU / fp16 on GPU), one window after another",
    "faster-whisper": "faster-whisper (CTranslate2, int8 on CPU / fp16 on GPU), sequential, loaded as the library "
    "loads it by default (one replica with every thread)",
    "faster-whisper-batched": "faster-whisper's BatchedInferencePipeline (VAD chunks, batch 8), loaded so too (its "
    "batches run one after another: a second replica would idle)",
    "faster-whisper-batched-words": "the same with word_timestamps=True: the word alignment the worker's path runs "
    "for every window to time its sentence segments (the pipeline's own segments are its ~30 s VAD chunks)",
    "worker-batched": "the worker's batched path, as `batchscribe transcribe` runs it (batches.transcribe_file: "
    "streamed windows -> Batches, features prepared a batch ahead -> FasterWhisperBatchRunner, each batch split "
    "between the engine's CPU lanes: two replicas, one thread each, side by side)",
    "worker-one-lane": "the same path on one replica with every thread (lanes=1), in batches of 8 on a CPU (its best: "
    "the worker's path before the lanes); on a GPU the same as worker-batched",
}
ONE_LANE_CPU_BATCH = 8  # worker-one-lane's B on a CPU
MODEL = "tiny.en"
BEAM = 5
WARMUP_TEXT = "The weather today is sunny and warm. We will meet at the office after lunch."


# ---- the child: one variant, measured alone ---------------------------------------------


class Memory:
    """Peak resident memory per phase, from /proc/self/status; `phase()` returns the peak
    since the previous call and resets it (clear_refs 5), where the kernel allows."""

    def __init__(self) -> None:
        self.resettable = self._reset()
        self.peaks: list[float] = []

    @staticmethod
    def _field(name: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024  # kB -> MB
        return float("nan")

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def rss(self) -> float:
        return self._field("VmRSS")

    def phase(self) -> float:
        peak = self._field("VmHWM")
        self.peaks.append(peak)
        self._reset()
        return peak


def _transcriber(variant: str, device: str, batch_size: int) -> tuple[Callable[[Path, Any], str], str]:
    """Load a variant; returns transcribe(path, decoded_audio) -> text, and the device used."""
    from gpu_container.worker.whisper_lib import library_transcribe

    if variant == "openai-whisper":
        from gpu_container.worker.engines import OpenAIWhisperEngine

        ow = OpenAIWhisperEngine(model=MODEL, device=device, beam_size=BEAM)
        return (lambda _path, audio: library_transcribe(ow, audio.samples, language="en")), ow.device
    from gpu_container.worker.engines import FasterWhisperEngine

    if variant.startswith("faster-whisper"):
        fw = FasterWhisperEngine(model=MODEL, device=device, beam_size=BEAM, lanes=1)
        pipeline_batch = 8 if "batched" in variant else 0  # BatchedInferencePipeline's batch, as before
        words = variant.endswith("-words")
        return (
            lambda _path, audio: library_transcribe(
                fw, audio.samples, language="en", batch_size=pipeline_batch, word_timestamps=words
            )
        ), fw.device
    if variant in ("worker-batched", "worker-one-lane"):
        from batchscribe.models import JobOptions
        from gpu_container.worker.batches import transcribe_file

        one_lane = variant == "worker-one-lane"
        engine = FasterWhisperEngine(model=MODEL, device=device, beam_size=BEAM, lanes=1 if one_lane else 0)
        if one_lane and engine.device != "cuda":
            batch_size = ONE_LANE_CPU_BATCH

        def worker_path(path: Path, _audio: Any) -> str:
            """One job through the worker's own path (what `batchscribe transcribe` runs): the
            file streamed into windows, batches of B, features prepared a batch ahead."""
            options = JobOptions(language="en")
            return transcribe_file(path, options, engine, max_duration_seconds=4 * 3600, batch_size=batch_size).text

        return worker_path, engine.device
    raise ValueError(f"unknown variant {variant!r}")


def child(variant: str, device: str, batch_size: int, warmup: Path, paths: list[Path], out: Path) -> None:
    from gpu_container.worker.media import decode

    mem = Memory()
    started_rss = mem.rss()
    audio = [decode(p, 4 * 3600) for p in [warmup, *paths]]
    mem.phase()
    before_rss = mem.rss()
    t0 = time.perf_counter()
    if variant == "openai-whisper":
        import torch  # noqa: F401
        import whisper  # noqa: F401
    else:
        import faster_whisper  # noqa: F401
    import_s = time.perf_counter() - t0
    transcribe, used = _transcriber(variant, device, batch_size)
    load_s = time.perf_counter() - t0
    load_peak = mem.phase()
    loaded_rss = mem.rss()
    transcribe(warmup, audio[0])  # warm up (first-call allocations, VAD session, caches)
    mem.phase()
    files = []
    for path, a in zip(paths, audio[1:], strict=True):
        w0, c0 = time.perf_counter(), time.process_time()
        text = transcribe(path, a)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        files.append({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": mem.phase(), "text": text})
    out.write_text(
        json.dumps(
            {
                "variant": variant,
                "device": used,
                "import_s": import_s,
                "load_s": load_s,
                "start_rss_mb": started_rss,
                "rss_before_load_mb": before_rss,
                "load_peak_rss_mb": load_peak,
                "loaded_rss_mb": loaded_rss,
                "peak_rss_mb": max(mem.peaks),
                "peak_rss_per_phase": mem.resettable,
                "files": files,
            }
        )
    )


# ---- the parent: files, rounds, summary -------------------------------------------------


def _label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    from gpu_container.worker.engines import cuda_available

    return "cuda" if cuda_available() else "cpu"


def child_env(omp_wait_policy: str) -> dict[str, str]:
    """The children's environment. OpenMP's default wait policy spins: on a machine whose cores
    other processes also want, PyTorch's two OpenMP threads then wait for each other for whole
    time slices (measured here: openai-whisper 5x slower at a load average of 5 on 2 cores;
    faster-whisper ~15 %). PASSIVE (the default here) puts waiting threads to sleep, for all
    variants alike; `--omp-wait-policy default` keeps the libraries' own setting."""
    env = dict(os.environ)
    if omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    return env


def _run_child(
    variant: str, device: str, batch_size: int, warmup: Path, paths: list[Path], tmp: Path, env: dict[str, str]
) -> dict:
    out = tmp / f"child-{variant}.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.bench_engines", "--child", variant, "--device", device]
    argv += ["--batch-size", str(batch_size), "--warmup", str(warmup), "--out", str(out), *map(str, paths)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, cwd=ROOT, env=env)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def run(
    seconds: list[float],
    repeats: int,
    device: str,
    variants: list[str],
    tmp: Path,
    log: Callable[[str], None],
    omp_wait_policy: str = "passive",
    budget_s: float | None = None,
) -> dict[str, Any]:
    import jiwer

    from gpu_container.worker.batches import CPU_BATCH_SIZE
    from gpu_container.worker.main import default_batching
    from gpu_container.worker.media import decode
    from harness.audio import long_text, speak

    device = _device(device)
    # B as `batchscribe transcribe` runs one file (transcribe_file): CPU_BATCH_SIZE on a CPU;
    # on a GPU it sizes B from the memory free after the load, here the default a T4 gets
    batch_size = CPU_BATCH_SIZE if device != "cuda" else default_batching(device, MODEL)[1]
    if BASELINE in variants:  # the openai-whisper checkpoint is converted once, outside the timings
        from gpu_container.worker.engines import openai_checkpoint, resolve_model

        openai_checkpoint(resolve_model(MODEL))
    warmup = speak(WARMUP_TEXT, tmp / "warmup.wav")
    files: dict[str, dict[str, Any]] = {}
    paths: list[Path] = []
    for s in seconds:
        text = long_text(s)
        path = speak(text, tmp / f"speech-{s:g}.wav")
        files[_label(s)] = {
            "target_seconds": s,
            "audio_seconds": round(decode(path, 4 * 3600).duration, 2),
            "words": len(spoken_words(text).split()),
            "reference": text,
        }
        paths.append(path)
    log(
        f"{MODEL} on {device}, beam {BEAM}; files "
        + ", ".join(f"{k} ({v['audio_seconds']:.1f} s)" for k, v in files.items())
        + f"; {repeats} round(s) of {len(variants)} variant(s), each in its own process"
    )
    rounds: list[dict[str, Any]] = []
    started = time.perf_counter()
    done = 0
    for r in range(repeats):
        elapsed = time.perf_counter() - started
        if budget_s is not None and r > 0 and elapsed + elapsed / r > budget_s:
            log(f"  budget of {budget_s / 60:g} min: {repeats - r} more round(s) not run")
            break
        done += 1
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for variant in order:
            res = _run_child(variant, device, batch_size, warmup, paths, tmp, child_env(omp_wait_policy))
            for (name, meta), f in zip(files.items(), res["files"], strict=True):
                f["file"] = name
                f["x_realtime"] = meta["audio_seconds"] / f["wall_s"]
                f["wer"] = float(jiwer.wer(spoken_words(meta["reference"]), spoken_words(f.pop("text"))))
            res["round"] = r
            res["load_average"] = load_average()
            rounds.append(res)
            log(
                f"  round {r + 1} {variant:<23} load {res['load_s']:5.2f} s  peak RSS {res['peak_rss_mb']:6.0f} MB  "
                + "  ".join(
                    f"{f['file']}: {f['wall_s']:6.2f} s ({f['x_realtime']:5.1f}x) WER {f['wer']:.3f}"
                    for f in res["files"]
                )
            )
    return {
        "device": device,
        "model": MODEL,
        "beam_size": BEAM,
        "worker_batch_size": batch_size,
        "repeats": done,
        "repeats_requested": repeats,
        "omp_wait_policy": omp_wait_policy,
        "baseline": BASELINE if BASELINE in variants else None,
        "files": {k: {kk: vv for kk, vv in v.items() if kk != "reference"} for k, v in files.items()},
        "variants": summarise(rounds, variants, list(files)),
        "rounds": rounds,
    }


def summarise(rounds: list[dict[str, Any]], variants: list[str], files: list[str]) -> dict[str, Any]:
    """Each variant's figures over rounds; ratios to the baseline paired within a round."""
    by = {(r["variant"], r["round"]): r for r in rounds}
    ids = sorted({r["round"] for r in rounds})

    def paired(variant: str, get: Callable[[dict[str, Any]], float]) -> dict[str, Any] | None:
        ratios = []
        for i in ids:
            base, mine = by.get((BASELINE, i)), by.get((variant, i))
            if base is None or mine is None or get(base) <= 0:
                continue
            ratios.append(get(mine) / get(base))
        return stat(ratios, 3) if ratios else None

    out: dict[str, Any] = {}
    for v in variants:
        mine = [r for r in rounds if r["variant"] == v]
        row: dict[str, Any] = {
            "description": VARIANTS[v],
            "import_s": stat([r["import_s"] for r in mine], 3),
            "load_s": stat([r["load_s"] for r in mine], 3),
            "loaded_rss_mb": stat([r["loaded_rss_mb"] for r in mine], 1),
            "peak_rss_mb": stat([r["peak_rss_mb"] for r in mine], 1),
            "vs_openai_whisper": {
                "load_s": paired(v, lambda r: r["load_s"]),
                "peak_rss_mb": paired(v, lambda r: r["peak_rss_mb"]),
            },
            "files": {},
        }
        for i, name in enumerate(files):
            fs = [r["files"][i] for r in mine]

            def at(key: str, i: int = i) -> Callable[[dict[str, Any]], float]:
                return lambda res: float(res["files"][i][key])

            row["files"][name] = {
                "wall_s": stat([f["wall_s"] for f in fs], 3),
                "x_realtime": stat([f["x_realtime"] for f in fs], 2),
                "rtf": stat([1 / f["x_realtime"] for f in fs], 4),
                "cpu_s": stat([f["cpu_s"] for f in fs], 3),
                "peak_rss_mb": stat([f["peak_rss_mb"] for f in fs], 1),
                "wer": round(statistics.median(f["wer"] for f in fs), 4),
                "vs_openai_whisper": {
                    "wall_s": paired(v, at("wall_s")),
                    "x_realtime": paired(v, at("x_realtime")),
                    "cpu_s": paired(v, at("cpu_s")),
                    "peak_rss_mb": paired(v, at("peak_rss_mb")),
                    "wer": paired(v, at("wer")),
                },
            }
        out[v] = row
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[60, 300], help="speech files, seconds each")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each variant once per round)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--omp-wait-policy", choices=["passive", "active", "default"], default="passive", help="see child_env"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=None, help="start no round (after the first) that would end past this"
    )
    parser.add_argument("--quick", action="store_true", help="one short file, one round: checks the script runs")
    parser.add_argument(
        "--out", type=Path, default=None, help="default bench/results/engines-<device>.json (--quick: a temporary file)"
    )
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.device, args.batch_size, args.warmup, args.paths, args.out)
        return
    if args.quick:
        args.seconds, args.repeats = [5.0], 1
    started, load_start = time.perf_counter(), load_average()
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        body = run(
            args.seconds,
            args.repeats,
            args.device,
            args.variants,
            Path(tmp),
            lambda s: print(s, flush=True),
            args.omp_wait_policy,
            None if args.budget_minutes is None else args.budget_minutes * 60,
        )
    result = {"benchmark": "engines", **record(started, load_start, argv), **body}
    # a quick run's figures mean nothing: they never replace the recorded ones unless asked
    default = Path(tempfile.gettempdir()) / "engines-quick.json" if args.quick else RESULTS / "engines-{}.json"
    out = args.out or Path(str(default).format(result["device"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, meta in result["files"].items():
        print(f"{name} ({meta['audio_seconds']} s), median of {result['repeats']}:")
        for v, row in result["variants"].items():
            f = row["files"][name]
            ratio = f["vs_openai_whisper"]["x_realtime"]
            vs = f"x{ratio['median']:.2f} vs openai-whisper" if ratio else ""
            print(
                f"  {v:<23} {f['wall_s']['median']:7.2f} s  {f['x_realtime']['median']:6.1f}x realtime  "
                f"{vs:<24} "
                f"peak RSS {f['peak_rss_mb']['median']:6.0f} MB  WER {f['wer']:.3f}"
            )
    print(f"recorded in {out}")


if __name__ == "__main__":
    main()
