"""Fixtures of the worker tests: speech made at test time, the two engines on tiny.en."""

from __future__ import annotations

import os
import signal
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu_container.worker.engines import Engine, FasterWhisperEngine, OpenAIWhisperEngine
from harness.audio import SHORT_TEXT, convert, long_text, make_video_only, speak


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    d = tmp_path_factory.mktemp("speech")
    wav = speak(SHORT_TEXT, d / "short.wav")
    text60 = long_text(60)
    files = {
        "wav": (wav, SHORT_TEXT),
        "mp3": (convert(wav, d / "short.mp3"), SHORT_TEXT),
        "ogg": (convert(wav, d / "short.ogg", "-c:a", "libvorbis"), SHORT_TEXT),
        "long": (speak(text60, d / "long.wav"), text60),
    }
    corrupt = d / "corrupt.wav"
    corrupt.write_bytes(os.urandom(4096))
    header_only = d / "empty.wav"
    header_only.write_bytes(
        b"RIFF"
        + struct.pack("<I", 36)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
        + b"data"
        + struct.pack("<I", 0)
    )
    video_only = d / "video.mp4"
    make_video_only(video_only)
    files["corrupt"] = (corrupt, "")
    files["empty"] = (header_only, "")
    files["video"] = (video_only, "")
    return files


@pytest.fixture(scope="session")
def engines() -> dict[str, Engine]:
    return {"faster-whisper": FasterWhisperEngine(), "openai-whisper": OpenAIWhisperEngine()}


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
