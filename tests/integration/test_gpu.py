"""On a CUDA machine: each engine uses the GPU (faster-whisper in float16) and still
transcribes well through the worker's own path. Deselected where no GPU is present (CI never
has one)."""

from __future__ import annotations

from pathlib import Path

import jiwer
import pytest

from batchscribe.models import JobOptions
from gpu_container.worker.batches import transcribe_file
from gpu_container.worker.engines import FasterWhisperEngine, OpenAIWhisperEngine
from gpu_container.worker.preflight import CudaProbe, choose_device
from harness.audio import long_text, speak, spoken_words

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("engine_cls", [FasterWhisperEngine, OpenAIWhisperEngine])
def test_engine_picks_the_gpu_and_transcribes(tmp_path: Path, engine_cls: type) -> None:
    text = long_text(60)
    wav = speak(text, tmp_path / "a.wav")
    engine = engine_cls()
    assert engine.device == "cuda"
    if isinstance(engine, FasterWhisperEngine):
        assert engine.compute_type == "float16"
    transcript = transcribe_file(wav, JobOptions(), engine, max_duration_seconds=600)
    assert jiwer.wer(spoken_words(text), spoken_words(transcript.text)) <= 0.3


@pytest.mark.parametrize("engine", ["faster-whisper", "openai-whisper"])
def test_the_gpu_passes_the_preflight_with_the_real_probe(engine: str) -> None:
    """libcuda, NVML and the engine's own kernel on this machine's GPU: the worker would start."""
    choice = choose_device("cuda", "auto", CudaProbe(engine))
    assert choice.failed is None and choice.passed is not None, choice.failed
    assert choice.passed.device.capability >= (5, 3) and choice.passed.driver.cuda >= (12, 0)
