"""`batchscribe local up` run as a user runs it, in its own process: the lines it prints, and
SIGINT (Ctrl-C) to stop it."""

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
def local_up(data: Path | None, *extra: str, env: dict[str, str] | None = None) -> Iterator[Running]:
    """`batchscribe local up` on `data` (None: its default folder), stopped with SIGINT (as
    Ctrl-C does) at the end if it still runs."""
    where = ["--data-dir", str(data)] if data is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", "local", "up", "--port", "0", *where, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
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
