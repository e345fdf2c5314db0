"""`batchscribe local up` as a user runs it, stopped with Ctrl-C (SIGINT) and started again on
the same data folder: a job whose file went up in parts is still the same job after the
restart (its pinned multipart ETag survives the snapshot) and runs to success."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from batchscribe_cli.client import MULTIPART_BYTES, Client
from harness.audio import SHORT_TEXT, convert, speak
from tests.e2e.waits import wait_until

pytestmark = pytest.mark.slow

API_LINE = "BATCHSCRIBE_API="


class Running:
    """A `batchscribe local up` process and the lines it printed."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            self.lines.put(line)

    def wait_for(self, prefix: str, timeout: float = 120) -> str:
        """The first line (printed from now on) that starts with `prefix`."""
        while True:
            try:
                line = self.lines.get(timeout=timeout).strip()
            except queue.Empty:
                raise AssertionError(f"no line {prefix!r} in {timeout} s; saw: {self.seen[-20:]}") from None
            self.seen.append(line)
            if line.startswith(prefix) or f" {prefix}" in line:
                return line


@contextmanager
def local_up(data: Path, *extra: str) -> Iterator[Running]:
    """`batchscribe local up` on `data`, stopped with SIGINT (as Ctrl-C does) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", "local", "up", "--port", "0", "--data-dir", str(data), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = Running(proc)
    try:
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture(scope="module")
def big_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speech in a 48 kHz stereo float WAV padded to 50 s: ~18 MiB, so it goes up in two parts."""
    d = tmp_path_factory.mktemp("audio")
    wav = convert(
        speak(SHORT_TEXT, d / "short.wav"),
        d / "big.wav",
        "-af",
        "apad=whole_dur=50",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-c:a",
        "pcm_f32le",
    )
    assert wav.stat().st_size > MULTIPART_BYTES
    return wav


def test_a_multipart_upload_survives_a_ctrl_c_restart(tmp_path: Path, big_wav: Path) -> None:
    data = tmp_path / "data"
    # Given a stack without workers (the job stays queued) and a file uploaded in parts
    with local_up(data, "--max-workers", "0") as first:
        api = first.wait_for(API_LINE).split("=", 1)[1]
        client = Client(api, owner="erin")
        job_id = client.submit(big_wav, {"language": "en"})["job_id"]
        wait_until(lambda: client.get(job_id)["status"] == "queued", 60)
        first.proc.send_signal(signal.SIGINT)
        first.wait_for("saved")
        assert first.proc.wait(timeout=120) == 0
    # When it starts again on the same folder, with a worker
    with local_up(data, "--max-workers", "1") as second:
        api = second.wait_for(API_LINE).split("=", 1)[1]
        client = Client(api, owner="erin")
        done = client.wait(job_id, timeout=300)
        # Then the job is the same job and it succeeds (not `input_changed`)
        assert done["status"] == "succeeded", done.get("error")
        assert "weather" in client.result_text(done, "txt").lower()
