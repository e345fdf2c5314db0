"""Jobs per minute through one worker on the local stack: one job at a time (K = 1, B = 1)
against cross-job batching (K = 16 jobs held, B = 8 rows a batch; and K = B = 8), on the same 16
short jobs, in one run.

Each round starts the local stack with one worker allowed, holds the worker back until all
16 jobs are queued, lets it go, and measures from the first claim to the last commit (the
jobs' own started_at / finished_at), so the stack's start and the model load are not
counted. Rounds alternate between the two modes (`--repeats` each) so background load hits
both alike; medians are reported with both word error rates, and the last line is
`throughput ratio: X.XX\u00d7` (batched jobs per minute / one-at-a-time jobs per minute).
Before the rounds, in this process, `packing()` runs the same jobs through the worker's
`Batches` (K and B of the batched mode) with window packing off and on (packing.py), and packed
with K = B (and with every job held, where K holds fewer), and counts
encoder seconds (30 s per window row the encoder read, continuation passes and fallbacks
included) against speech seconds (the VAD windows' audio), with each job's WER both ways.
Results go to bench/results/throughput-<device>.json with the hardware. A measurement, not a test.

    make bench-throughput            # or: python -m bench.bench_throughput --jobs 16 --repeats 2
    python -m bench.bench_throughput --packing-only   # the encoder-seconds measurement alone
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchscribe.models import iso
from batchscribe.settings import Timings
from batchscribe.whisper_models import WINDOW_SECONDS
from batchscribe_cli.client import Client
from batchscribe_cli.local import LocalConfig, LocalStack
from bench.bench_batching import make_jobs, wer
from bench.provenance import ROOT, command, hardware, load_average

RESULTS = ROOT / "bench" / "results"
# batched: K = 2B, as packing lays about two of these jobs in a row (K = B filled half a batch's
# B rows: 8 held jobs packed into 4); batched-k-eq-b: the same rows with K = B, for comparison
MODES = {"one-at-a-time": (1, 1), "batched": (16, 8), "batched-k-eq-b": (8, 8)}
# One job at a time loads the model as faster-whisper does by default (one replica with both
# threads); the batched modes with the worker's CPU lanes (engines.FasterWhisperEngine), whose
# second replica a batch of one window would leave idle.
ONE_LANE = {"one-at-a-time"}
_DEPLOYED = Timings()
# The local stack's schedules (the scaler starts the worker within a second of being let go),
# with a deployment's lease timings: the local stack's 1 s heartbeat (there so that a lost lease
# shows within seconds) wrote each held job's lease and its message's visibility every second,
# ~5x the AWS calls a job needs otherwise, each served by moto on the worker's own two cores.
TIMINGS = Timings.local().replace(
    idle_exit_seconds=30,
    heartbeat_seconds=_DEPLOYED.heartbeat_seconds,
    lease_seconds=_DEPLOYED.lease_seconds,
    visibility_seconds=_DEPLOYED.visibility_seconds,
    queued_redrive_seconds=_DEPLOYED.queued_redrive_seconds,
)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def one_round(mode: str, jobs: dict[str, tuple[str, Path]], data_dir: Path) -> dict[str, Any]:
    held, batch = MODES[mode]
    config = LocalConfig(
        port=0,
        max_workers=1,
        data_dir=data_dir,
        timings=TIMINGS,
        worker_held_jobs=held,
        worker_batch_size=batch,
        worker_cpu_lanes=1 if mode in ONE_LANE else 0,
        quiet=True,
    )
    with LocalStack(config) as stack:
        stack.set_max_workers(0)  # queue everything first
        client = Client(stack.url, owner=f"bench-{mode}")
        ids = {name: client.submit(path, {"language": "en"})["job_id"] for name, (_, path) in jobs.items()}
        deadline = time.monotonic() + 120
        while any(client.get(i)["status"] != "queued" for i in ids.values()):
            if time.monotonic() > deadline:
                raise RuntimeError("jobs did not reach queued")
            time.sleep(0.2)
        stack.set_max_workers(1)
        done = {name: client.wait(job_id, timeout=900) for name, job_id in ids.items()}
        failed = [n for n, j in done.items() if j["status"] != "succeeded"]
        if failed:
            raise RuntimeError(f"{mode}: jobs did not succeed: {failed}")
        texts = {name: client.result_text(job, "txt") for name, job in done.items()}
    first = min(_seconds(j["started_at"]) for j in done.values())
    last = max(_seconds(j["finished_at"]) for j in done.values())
    seconds = last - first
    return {
        "mode": mode,
        "held_jobs": held,
        "batch_size": batch,
        "seconds": round(seconds, 3),
        "jobs_per_minute": round(len(jobs) / seconds * 60, 2),
        "wer": round(wer(jobs, texts), 4),
        "started": iso(first),
    }


def through_batches(
    runner: Any, jobs: dict[str, tuple[str, Path]], *, held: int, batch: int, pack: bool
) -> tuple[dict[str, str], int, float]:
    """The jobs through the worker's Batches, `held` at a time (as claims refill the worker):
    each job's text, the window rows the encoder read, and the speech seconds of the windows."""
    from gpu_container.worker.batched import DecodeOptions, assemble_stream
    from gpu_container.worker.batches import Batches
    from gpu_container.worker.scheduler import JobFinished
    from gpu_container.worker.windows import open_media

    rows = 0
    encode = runner.steps.encode
    counted = threading.Lock()  # the runner's lanes encode side by side

    def counting(features: Any) -> Any:
        nonlocal rows
        with counted:
            rows += len(features)
        return encode(features)

    runner.steps.encode = counting
    batches = Batches(lambda _key: runner, batch_size=batch, read_ahead=8, pack=pack)
    waiting, streams, texts, speech = list(jobs), {}, {}, 0.0
    try:
        while waiting or len(batches):
            while waiting and len(batches) < held:
                name = waiting.pop(0)
                streams[name] = stream = open_media(jobs[name][1], 600)
                batches.add(name, ("faster-whisper", "tiny.en"), stream, DecodeOptions(language="en"))
            step = batches.step()
            for event in step.events:
                assert isinstance(event, JobFinished), event
                texts[event.job] = assemble_stream(event.results, streams[event.job]).text
                speech += sum(r.speech_seconds for r in event.results)
            if not step.ran:
                time.sleep(0.01)
    finally:
        runner.steps.encode = encode
    return texts, rows, speech


def packing(jobs: dict[str, tuple[str, Path]], held: int, batch: int, repeats: int = 1) -> dict[str, Any]:
    """Encoder seconds per speech second and each job's WER, window packing off and on; each
    variant's seconds the median of `repeats` rounds (the variants in turn within a round, so
    the machine's own drift hits them alike), rows and WER from the first round."""
    from gpu_container.worker.batched import FasterWhisperBatchRunner
    from gpu_container.worker.engines import FasterWhisperEngine

    runner = FasterWhisperBatchRunner.from_engine(FasterWhisperEngine(device="cpu", cpu_threads=2))
    one_lane = FasterWhisperBatchRunner.from_engine(FasterWhisperEngine(device="cpu", cpu_threads=2, lanes=1))
    out: dict[str, Any] = {"held_jobs": held, "batch_size": batch}
    # first the one-at-a-time mode's model path (K = B = 1), the baseline of the in-process ratio;
    # then packed with K = B, and with every job held (as a GPU worker, K 32-64, holds a burst of short jobs)
    variants = (
        ("one_at_a_time", False, 1, 1),
        ("unpacked", False, held, batch),
        ("packed", True, held, batch),
        *((("packed_k_eq_b", True, batch, batch),) if held != batch else ()),
        *((("packed_all_held", True, len(jobs), batch),) if held < len(jobs) else ()),
    )
    times: dict[str, list[float]] = {name: [] for name, *_ in variants}
    for round_, (name, pack, k, b) in ((r, v) for r in range(max(1, repeats)) for v in variants):
        started = time.perf_counter()
        texts, rows, speech = through_batches(
            one_lane if name == "one_at_a_time" else runner, jobs, held=k, batch=b, pack=pack
        )
        times[name].append(round(time.perf_counter() - started, 2))
        if round_:
            out[name]["seconds"] = round(statistics.median(times[name]), 2)
            out[name]["seconds_runs"] = times[name]
            print(f"  {name:<15} round {round_ + 1}: {times[name][-1]:.1f} s", flush=True)
            continue
        out[name] = {
            "held_jobs": k,
            "batch_size": b,
            "seconds": times[name][0],
            "seconds_runs": times[name],
            "encoder_rows": rows,
            "encoder_seconds": rows * WINDOW_SECONDS,
            "speech_seconds": round(speech, 2),
            "encoder_per_speech": round(rows * WINDOW_SECONDS / speech, 3),
            "wer": round(wer(jobs, texts), 4),
            "job_wer": {j: round(wer({j: jobs[j]}, {j: texts[j]}), 4) for j in sorted(jobs)},
        }
        r = out[name]
        print(
            f"  {name:<15} K={k} B={b}: {rows} encoder rows = {r['encoder_seconds']:.0f} s for "
            f"{speech:.1f} s of speech ({r['encoder_per_speech']:.2f}), WER {r['wer']:.3f}, {r['seconds']:.1f} s",
            flush=True,
        )
    # the model path's own ratio: the same jobs and code as the stack's rounds without the stack,
    # whose AWS stand-ins and handlers share the worker's two cores on this machine
    out["model_path_ratio"] = {
        name: round(out["one_at_a_time"]["seconds"] / out[name]["seconds"], 2) for name, pack, *_ in variants if pack
    }
    print(f"  model path alone, in process (one at a time \u00f7 packed): {out['model_path_ratio']}", flush=True)
    worse = [j for j in jobs if out["packed"]["job_wer"][j] > out["unpacked"]["job_wer"][j]]
    out["jobs_worse_packed"] = worse
    print(f"  jobs whose WER is worse packed: {worse or 'none'}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--packing-only", action="store_true", help="only the in-process encoder-seconds measurement")
    args = parser.parse_args()
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        root = Path(tmp)
        jobs = make_jobs(root, args.jobs)
        audio = sum(_duration(p) for _, p in jobs.values())
        print(f"{args.jobs} jobs, {audio:.0f} s of speech, tiny.en", flush=True)
        packed = packing(jobs, *MODES["batched"], repeats=args.repeats)
        if args.packing_only:
            return
        print("one worker on the local stack", flush=True)
        rounds: list[dict[str, Any]] = []
        for i in range(args.repeats):
            order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
            for mode in order:
                r = one_round(mode, jobs, root / f"data-{mode}-{i}")
                rounds.append(r)
                print(
                    f"  {mode:<14} K={r['held_jobs']} B={r['batch_size']}: {r['seconds']:.1f} s, "
                    f"{r['jobs_per_minute']:.1f} jobs/min, WER {r['wer']:.3f}",
                    flush=True,
                )
    summary = {}
    for mode in MODES:
        mine = [r for r in rounds if r["mode"] == mode]
        per_minute = [r["jobs_per_minute"] for r in mine]
        summary[mode] = {
            "jobs_per_minute_median": statistics.median(per_minute),
            "min": min(per_minute),
            "max": max(per_minute),
            "runs": len(mine),
            "wer": statistics.median(r["wer"] for r in mine),
        }
    baseline = summary["one-at-a-time"]["jobs_per_minute_median"]
    ratios = {m: round(s["jobs_per_minute_median"] / baseline, 3) for m, s in summary.items() if m != "one-at-a-time"}
    ratio = summary["batched"]["jobs_per_minute_median"] / baseline
    record = {
        "benchmark": "throughput",
        "command": command(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": hardware(),
        "load_average": {"start": load_start, "end": load_average()},
        "jobs": args.jobs,
        "speech_seconds": round(audio, 1),
        "summary": summary,
        "packing": packed,
        "throughput_ratio": round(ratio, 3),
        "ratios": ratios,
        "rounds": rounds,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"throughput-{'cuda' if 'gpu' in record['machine'] else 'cpu'}.json"
    record["previous"] = _previous(out)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for mode, s in summary.items():
        print(f"{mode}: {s['jobs_per_minute_median']:.1f} jobs/min (median of {s['runs']}), WER {s['wer']:.3f}")
    print(f"results: {out.relative_to(ROOT)}")
    for mode, r in ratios.items():
        print(f"{mode} \u00f7 one-at-a-time: {r:.2f}\u00d7")
    print(f"throughput ratio: {ratio:.2f}\u00d7")


def _previous(path: Path, keep_runs: int = 4) -> list[dict[str, Any]]:
    """The runs this one replaces, newest first (date, command, load, ratio, WERs, encoder
    seconds per speech second): before and after a change stay side by side."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    earlier = old.get("previous") or []
    packing = old.get("packing") or {}
    this = {
        **{k: old.get(k) for k in ("date", "command", "load_average", "throughput_ratio")},
        "wer": {m: s.get("wer") for m, s in old.get("summary", {}).items()},
        "encoder_per_speech": {m: p.get("encoder_per_speech") for m, p in packing.items() if isinstance(p, dict)},
    }
    return [this, *(earlier if isinstance(earlier, list) else [earlier])][:keep_runs]


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


if __name__ == "__main__":
    main()
