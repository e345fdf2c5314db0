"""On a CUDA machine: the default engine uses the GPU in float16 and still transcribes well.
Deselected where no GPU is present (CI never has one)."""

from __future__ import annotations

import re
from pathlib import Path

import jiwer
import pytest

from batchscribe.models import JobOptions
from gpu_container.worker.engines import FasterWhisperEngine, OpenAIWhisperEngine
from gpu_container.worker.media import decode
from harness.audio import long_text, speak

pytestmark = pytest.mark.gpu


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text.lower()).split())


@pytest.mark.parametrize("engine_cls", [FasterWhisperEngine, OpenAIWhisperEngine])
def test_engine_picks_the_gpu_and_transcribes(tmp_path: Path, engine_cls: type) -> None:
    text = long_text(60)
    audio = decode(speak(text, tmp_path / "a.wav"), 600)
    engine = engine_cls()
    assert engine.device == "cuda"
    if isinstance(engine, FasterWhisperEngine):
        assert engine.compute_type == "float16"
    transcript = engine.transcribe(audio.samples, JobOptions(), lambda _s: None)
    assert jiwer.wer(_words(text), _words(transcript.text)) <= 0.3
