"""`batchscribe transcribe FILE` without -o: the text on stdout, a progress bar on stderr when
stderr is a terminal (and none when it is not, so logs stay clean)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from harness.audio import SHORT_TEXT, speak

pytestmark = pytest.mark.slow


def test_progress_bar_on_a_terminal_text_on_stdout(tmp_path: Path) -> None:
    wav = speak(SHORT_TEXT, tmp_path / "a.wav")
    leader, follower = pty.openpty()  # stderr is a terminal; stdout a pipe, as in `... > out.txt`
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    env.pop("BATCHSCRIBE_PROGRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", "transcribe", str(wav)],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        terminal += chunk
    assert proc.stdout is not None
    text = proc.stdout.read().decode()
    assert proc.wait(timeout=120) == 0, terminal.decode(errors="replace")
    os.close(leader)

    assert b"transcribing" in terminal  # the bar was drawn on the terminal
    assert b"real-time factor" in terminal
    assert "weather" in text.lower() and "\x1b" not in text and "transcribing" not in text

    piped = subprocess.run(
        [sys.executable, "-m", "batchscribe_cli", "transcribe", str(wav)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert piped.returncode == 0 and "weather" in piped.stdout.lower()
    assert "transcribing" not in piped.stderr and "\x1b" not in piped.stderr  # no bar into a log
