"""One transcription path: `batchscribe transcribe FILE` and the service's worker give the same
transcript (text, punctuation, cues) for the same file and options, and that path keeps the
punctuation faster-whisper's own transcribe gives. moto, the real tiny.en model, espeak."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from batchscribe.repository import JobRepository
from batchscribe.whisper_models import SAMPLE_RATE
from batchscribe_cli.cli import main
from gpu_container.worker.engines import Engine
from gpu_container.worker.media import decode
from gpu_container.worker.whisper_lib import library_transcribe
from harness.audio import SHORT_TEXT, speak
from tests.conftest import Stack
from tests.integration.workers import make_worker, s3_text, submit

pytestmark = pytest.mark.slow

# A list spoken in phrases with a second's pause between them: where the commas go. Cutting
# every pause over 160 ms out of a window (as the worker's VAD once did) made tiny.en write
# "and I bought Apple's bread and tea." where faster-whisper's own transcribe writes
# "and I bought apples, bread, and tea."
PHRASES = ["Yesterday, after work,", "I went to the market,", "and I bought apples, bread, and tea."]
PAUSE_SECONDS = 1.0


def spoken_with_pauses(phrases: list[str], pause: float, folder: Path) -> Path:
    silence = np.zeros(int(pause * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    for i, phrase in enumerate(phrases):
        parts += [silence] if parts else []
        parts.append(decode(speak(phrase, folder / f"phrase{i}.wav"), 60).samples)
    out = folder / "phrases.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes())
    return out


@pytest.fixture(scope="module")
def punctuated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return spoken_with_pauses(PHRASES, PAUSE_SECONDS, tmp_path_factory.mktemp("phrases"))


def service(stack: Stack, engine: Engine, path: Path, **options: object) -> dict[str, str]:
    """The file through the worker against moto: each output format's text."""
    job_id = submit(stack, path, **options)  # type: ignore[arg-type]
    # it exits after its one job; the idle exit only ends a run that never got it, so it is long
    # enough for a busy machine's first receive (1 s, the helpers' default, was not on CI)
    assert make_worker(stack, engine, max_jobs=1, idle_exit_seconds=30).run() == 0
    job = JobRepository(stack.table).get(job_id)
    assert job.result is not None, job
    return {fmt: s3_text(stack, key) for fmt, key in job.result.outputs.items()}


def cli(path: Path, fmt: str, folder: Path, *args: str) -> str:
    out = folder / f"cli.{fmt}"
    assert main(["transcribe", str(path), "--format", fmt, "-o", str(out), "-q", *args]) == 0
    return out.read_text()


@pytest.mark.parametrize("sample", ["short", "punctuated"])
def test_the_cli_and_the_service_give_the_same_transcript(
    aws_stack: Stack,
    speech: dict[str, tuple[Path, str]],
    punctuated: Path,
    engines: dict[str, Engine],
    tmp_path: Path,
    sample: str,
) -> None:
    path = speech["wav"][0] if sample == "short" else punctuated

    served = service(aws_stack, engines["faster-whisper"], path, language="en")
    local = {fmt: cli(path, fmt, tmp_path, "--language", "en") for fmt in ("txt", "srt", "vtt", "json")}

    assert local["txt"] == served["txt"]
    assert local["srt"] == served["srt"] and local["vtt"] == served["vtt"]  # the same readable cues
    ours, theirs = json.loads(local["json"]), json.loads(served["json"])
    assert ours["segments"] == theirs["segments"] and ours["segments"]
    assert {k: ours[k] for k in ("text", "language", "duration", "engine", "model")} == {
        k: theirs[k] for k in ("text", "language", "duration", "engine", "model")
    }
    if sample == "short":
        assert served["txt"].count(".") >= 3  # SHORT_TEXT's three sentences, each ended
        assert len(SHORT_TEXT.split()) * 0.7 <= len(served["txt"].split())


def test_the_service_keeps_the_punctuation_faster_whisper_gives(
    aws_stack: Stack, punctuated: Path, engines: dict[str, Engine]
) -> None:
    """Pauses under two seconds stay in a window (faster-whisper's own VAD settings), so the
    model hears where the commas go: the service writes what faster-whisper's transcribe
    writes for the same audio, commas and all."""
    engine = engines["faster-whisper"]
    reference = library_transcribe(engine, decode(punctuated, 60).samples, language="en")

    served = json.loads(service(aws_stack, engine, punctuated, language="en")["json"])["text"]

    assert served == reference
    assert served.count(",") >= 3 and served.endswith("."), served
