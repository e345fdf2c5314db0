"""The openai-whisper batch runner's timestamp rules run over the whole batch
(whisper_lib.batched_timestamp_rules) and decode exactly the tokens the library's per-row loop
decodes: tiny.en on CPU, one batch of windows of espeak speech, silence and noise, greedy,
beam search and sampling (the same seed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from batchscribe.whisper_models import SAMPLE_RATE
from gpu_container.worker import whisper_lib
from gpu_container.worker.engines import OpenAIWhisperEngine
from gpu_container.worker.media import decode
from harness.audio import SHORT_TEXT, have_tools, long_text, speak

TIMESTAMP_BEGIN = 50363  # tiny.en's first timestamp token

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_tools(), reason="espeak-ng and ffmpeg make the test speech"),
]


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    root = tmp_path_factory.mktemp("rules")
    short = decode(speak(SHORT_TEXT, root / "short.wav"), 600).samples
    long = decode(speak(long_text(40), root / "long.wav"), 600).samples
    noise = np.random.default_rng(7).normal(0, 0.01, 10 * SAMPLE_RATE).astype(np.float32)
    return [
        short,
        long[: 30 * SAMPLE_RATE],  # a full window
        long[30 * SAMPLE_RATE :],  # the rest
        np.zeros(20 * SAMPLE_RATE, np.float32),  # silence
        noise,
        np.concatenate([np.zeros(8 * SAMPLE_RATE, np.float32), short]),  # speech after silence
    ]


@pytest.fixture(scope="module")
def features(windows: list[np.ndarray]) -> tuple[Any, Any]:
    engine = OpenAIWhisperEngine(device="cpu")
    steps = whisper_lib.OpenAIWhisperSteps(engine.model, fp16=False)
    mels, _ = steps.log_mels(windows)
    return engine.model, steps.embed(mels)


def _decode(model: Any, features: Any, batched: bool, temperature: float, beam: int | None) -> list[list[int]]:
    steps = whisper_lib.OpenAIWhisperSteps(model, fp16=False, batched_rules=batched)
    torch.manual_seed(11)  # sampling draws the same numbers for both
    decoded = steps.decode(
        features,
        language="en",
        task="transcribe",
        prompt=None,
        temperature=temperature,
        beam_size=beam,
        defaults=whisper_lib.openai_whisper_defaults(),
        max_new_tokens=96,  # silence and noise may run to the limit: enough steps, less time
    )
    return [d.tokens for d in decoded]


@pytest.mark.parametrize(("temperature", "beam", "rows"), [(0.0, None, 6), (0.0, 3, 6), (0.6, None, 3)])
def test_batched_rules_decode_the_same_tokens_as_the_per_row_loop(
    features: tuple[Any, Any], temperature: float, beam: int | None, rows: int
) -> None:
    model, encoded = features
    encoded = encoded[:rows]  # sampling draws best-of-5 candidates per window: fewer windows
    loop = _decode(model, encoded, False, temperature, beam)
    batched = _decode(model, encoded, True, temperature, beam)

    assert batched == loop
    stamps = [t for row in batched for t in row if t >= TIMESTAMP_BEGIN]
    assert stamps, "the windows decoded timestamps: the rules had something to do"
    assert sum(len(row) > 2 for row in batched) >= 2, "the speech windows decoded text"
