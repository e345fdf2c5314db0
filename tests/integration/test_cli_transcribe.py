"""`batchscribe transcribe FILE`: the one-file mode people and benchmarks use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from harness.audio import SHORT_TEXT, convert, speak

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchscribe_cli", *args], capture_output=True, text=True, timeout=300)


def test_transcribe_prints_text_and_writes_files(tmp_path: Path) -> None:
    mp3 = convert(speak(SHORT_TEXT, tmp_path / "a.wav"), tmp_path / "a.mp3")
    out = run("transcribe", str(mp3))
    assert out.returncode == 0, out.stderr
    assert jiwer.wer(SHORT_TEXT.lower(), out.stdout.lower().replace("\n", " ").strip()) < 0.4
    assert "real-time factor" in out.stderr

    target = tmp_path / "a.json"
    out = run("transcribe", str(mp3), "--engine", "openai-whisper", "--format", "json", "-o", str(target), "-q")
    assert out.returncode == 0, out.stderr
    assert json.loads(target.read_text())["segments"]


def test_transcribe_bad_input_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "notes.wav").write_text("not audio")
    out = run("transcribe", str(tmp_path / "notes.wav"))
    assert out.returncode == 1
    assert "invalid_media" in out.stderr and "hint:" in out.stderr
    assert run("transcribe", str(tmp_path / "missing.wav")).returncode == 2
