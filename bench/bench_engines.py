"""Engine benchmark: faster-whisper (sequential and batched) against openai-whisper, on the
same audio, in the same process. Reports medians and ratios against the openai-whisper
baseline, plus word error rate, and records them with the hardware they ran on.

    make bench                      # or: python bench/bench_engines.py --seconds 60 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchscribe.models import JobOptions  # noqa: E402
from gpu_container.worker.engines import Engine, FasterWhisperEngine, OpenAIWhisperEngine  # noqa: E402
from gpu_container.worker.media import decode  # noqa: E402
from tests.audio import long_text, speak  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def run(seconds: float, repeats: int, device: str) -> dict[str, Any]:
    import jiwer

    text = long_text(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        audio = decode(speak(text, Path(tmp) / "bench.wav"), 4 * 3600)
    engines: dict[str, Engine] = {
        "openai-whisper": OpenAIWhisperEngine(device=device),
        "faster-whisper": FasterWhisperEngine(device=device, batched="never"),
        "faster-whisper-batched": FasterWhisperEngine(device=device, batched="always"),
    }
    rows: dict[str, Any] = {}
    for name, engine in engines.items():
        engine.transcribe(audio.samples[: 16000 * 5], JobOptions(language="en"), lambda _s: None)  # warm up
        times, wer = [], 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            t = engine.transcribe(audio.samples, JobOptions(language="en"), lambda _s: None)
            times.append(time.perf_counter() - started)
            wer = jiwer.wer(_words(text), _words(t.text))
        median = statistics.median(times)
        rows[name] = {
            "median_s": round(median, 3),
            "rtf": round(median / audio.duration, 4),
            "wer": round(wer, 3),
            "runs": [round(x, 3) for x in times],
        }
    base = rows["openai-whisper"]["median_s"]
    for row in rows.values():
        row["speedup_vs_openai_whisper"] = round(base / row["median_s"], 2)
    return {
        "audio_seconds": round(audio.duration, 1),
        "repeats": repeats,
        "model": "tiny.en",
        "device": engines["faster-whisper"].device,
        "engines": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "hardware": hardware(),
        **run(args.seconds, args.repeats, args.device),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engines-{result['device']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{result['audio_seconds']} s of speech, {result['model']} on {result['device']} "
        f"({result['hardware']['cpu']}, {result['hardware']['cores']} cores), median of {args.repeats}:"
    )
    for name, row in result["engines"].items():
        print(
            f"  {name:<24} {row['median_s']:>7.2f} s  RTF {row['rtf']:.3f}  "
            f"x{row['speedup_vs_openai_whisper']:.2f} vs openai-whisper  WER {row['wer']:.3f}"
        )
    print(f"recorded in {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
