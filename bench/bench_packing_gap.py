"""The silence between packed pieces, measured: word error rate and encoder work over many mixes
of short jobs, for each gap and unpacked, in one process on the same audio.

Each mix is `--jobs` short espeak jobs (bench_batching.make_jobs: 2-4 sentences, 5-15 s), all
held at once by the worker's own `Batches` (B = 8 rows, tiny.en, int8, 2 threads), run once
unpacked and once packed with each gap (`packing.GAP_SECONDS` set for that run), the variants in
turn within each mix so the machine's drift hits all alike. Recorded per variant: encoder rows,
speech seconds, the corpus WER, how many jobs came out worse and better than unpacked, the
words a job got that only another job of its mix says (a word leaking across a boundary would
show here; misheard words such as "and" land here too, so the unpacked count is the floor), and
how many transcripts end with a full stop; per gap, the WER difference to the `--baseline` gap
with a 95 % interval from resampling the mixes. Every job's reference and transcript are kept.
A measurement, not a test.

    python -m bench.bench_packing_gap                       # 24 mixes of 16: ~10 min on 2 cores
    python -m bench.bench_packing_gap --mixes 6 --gaps 0.5 1.0
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchscribe.whisper_models import WINDOW_SECONDS
from bench.bench_batching import make_jobs
from bench.bench_throughput import through_batches
from bench.provenance import ROOT, load_average, record
from gpu_container.worker import packing
from gpu_container.worker.batched import FasterWhisperBatchRunner
from gpu_container.worker.engines import FasterWhisperEngine
from harness.audio import spoken_words

SEEDS = (7, 11, 13, 17, 19, 23, *range(101, 119))  # 7: bench_throughput's mix
UNPACKED = "unpacked"
RESAMPLES = 2000


@contextmanager
def _gap(seconds: float) -> Iterator[None]:
    saved = packing.GAP_SECONDS
    packing.GAP_SECONDS = seconds
    try:
        yield
    finally:
        packing.GAP_SECONDS = saved


def _wer(jobs: list[dict[str, str]]) -> float:
    import jiwer

    return float(jiwer.wer([spoken_words(j["ref"]) for j in jobs], [spoken_words(j["hyp"]) for j in jobs]))


def _foreign_words(mix: list[dict[str, str]]) -> int:
    """Words a job's transcript has that only another job of the mix says."""
    count = 0
    for i, job in enumerate(mix):
        own = set(spoken_words(job["ref"]).split())
        others = {w for k, other in enumerate(mix) if k != i for w in spoken_words(other["ref"]).split()} - own
        count += len(others & set(spoken_words(job["hyp"]).split()))
    return count


def summarise(variants: dict[str, dict[str, Any]], baseline: str, seed: int = 0) -> dict[str, Any]:
    """Per variant: rows, encoder seconds per speech second, WER, foreign words, full stops; and
    each variant's WER minus the baseline's, the mixes resampled (paired)."""
    out: dict[str, Any] = {}
    base = variants[baseline]["mixes"]
    base_wer = _wer([j for m in base for j in m["jobs"]])
    for name, v in variants.items():
        mixes = v["mixes"]
        jobs = [j for m in mixes for j in m["jobs"]]
        wer = _wer(jobs)
        rows, speech = sum(m["rows"] for m in mixes), sum(m["speech_s"] for m in mixes)
        summary: dict[str, Any] = {
            "rows": rows,
            "speech_s": round(speech, 1),
            "encoder_per_speech": round(rows * WINDOW_SECONDS / speech, 3) if speech else None,
            "wer": round(wer, 4),
            "foreign_words": sum(_foreign_words(m["jobs"]) for m in mixes),
            "full_stop_ends": sum(j["hyp"].strip()[-1:] in ".?!" for j in jobs),
            "jobs": len(jobs),
        }
        if name != UNPACKED and UNPACKED in variants:
            pairs = [
                (_wer([ours]), _wer([theirs]))
                for m, u in zip(mixes, variants[UNPACKED]["mixes"], strict=True)
                for ours, theirs in zip(m["jobs"], u["jobs"], strict=True)
            ]
            summary["jobs_worse_than_unpacked"] = sum(a > b for a, b in pairs)
            summary["jobs_better_than_unpacked"] = sum(a < b for a, b in pairs)
        if name != baseline:
            rng, diffs = random.Random(seed), []
            for _ in range(RESAMPLES):
                pick = [rng.randrange(len(mixes)) for _ in mixes]
                ours = [j for i in pick for j in mixes[i]["jobs"]]
                theirs = [j for i in pick for j in base[i]["jobs"]]
                diffs.append(_wer(ours) - _wer(theirs))
            diffs.sort()
            lo, hi = diffs[int(0.025 * RESAMPLES)], diffs[int(0.975 * RESAMPLES) - 1]
            summary["wer_minus_baseline"] = {
                "points": round(100 * (wer - base_wer), 2),
                "interval_95": [round(100 * lo, 2), round(100 * hi, 2)],
            }
        out[name] = summary
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixes", type=int, default=24, help=f"mixes of jobs (at most {len(SEEDS)})")
    parser.add_argument("--jobs", type=int, default=16, help="short jobs per mix, all held at once")
    parser.add_argument("--gaps", type=float, nargs="+", default=[0.5, 0.75, 1.0], help="seconds between pieces")
    parser.add_argument(
        "--baseline", default="1.0", help=f"the variant the others are compared with (a gap, or {UNPACKED!r})"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="rows per batch (B)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    started, load_start = time.perf_counter(), load_average()
    names = [UNPACKED, *(str(g) for g in args.gaps)]
    if args.baseline not in names:
        parser.error(f"--baseline must be one of {names}")
    runner = FasterWhisperBatchRunner.from_engine(FasterWhisperEngine(device="cpu", cpu_threads=2))
    variants: dict[str, dict[str, Any]] = {n: {"mixes": []} for n in names}
    root = Path(tempfile.mkdtemp())
    for seed in SEEDS[: args.mixes]:
        folder = root / str(seed)
        folder.mkdir()
        jobs = make_jobs(folder, args.jobs, seed=seed)
        for name in names:
            with _gap(float(name) if name != UNPACKED else packing.GAP_SECONDS):
                texts, rows, speech = through_batches(
                    runner, jobs, held=args.jobs, batch=args.batch_size, pack=name != UNPACKED
                )
            mix = [{"job": j, "ref": jobs[j][0], "hyp": texts[j]} for j in sorted(jobs)]
            variants[name]["mixes"].append({"seed": seed, "rows": rows, "speech_s": round(speech, 2), "jobs": mix})
            print(f"mix {seed}: {name:>8}  {rows} rows  WER {_wer(mix):.3f}", flush=True)
    summary = summarise(variants, args.baseline)
    for name, s in summary.items():
        diff = s.get("wer_minus_baseline")
        versus = f"  {diff['points']:+.2f} points {diff['interval_95']}" if diff else "  (baseline)"
        print(f"{name:>8}: encoder/speech {s['encoder_per_speech']}  WER {s['wer']:.4f}{versus}")
    out = args.out or ROOT / "bench" / "results" / "packing-gap-cpu.json"
    result = {
        **record(started, load_start, argv),
        "model": "tiny.en",
        "jobs_per_mix": args.jobs,
        "batch_size": args.batch_size,
        "default_gap_s": packing.GAP_SECONDS,
        "baseline": args.baseline,
        "seeds": list(SEEDS[: args.mixes]),
        "summary": summary,
        "variants": variants,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
