"""`batchscribe local up --device cuda` on this GPU-less machine (issue 21's show): a file is
submitted; each worker the scaler starts proves its GPU before its first claim, fails at the
driver, logs one line naming the cause and what to do, and exits 69; the stack's terminal says
so; the scaler then holds the pool back rather than start one a second; the job stays queued
with no attempt spent."""

from __future__ import annotations

import ctypes.util
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from batchscribe.resources import WORKER_NOT_STARTED, WorkerExit
from batchscribe_cli.cli import SAMPLE
from batchscribe_cli.client import Client
from tests.e2e.waits import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="this machine has an NVIDIA driver"),
]


class Terminal:
    """The lines a foreground `local up` prints, read as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def find(self, part: str) -> list[str]:
        return [line for line in list(self.lines) if part in line]


def test_local_up_with_device_cuda_stops_each_worker_before_it_claims(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = ["local", "up", "--port", "0", "--data-dir", str(data), "--device", "cuda", "--max-workers", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchscribe_cli", *up],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    terminal = Terminal(proc)
    try:
        wait_until(lambda: bool(terminal.find("BATCHSCRIBE_API=")), 120)
        url = terminal.find("BATCHSCRIBE_API=")[0].split("=", 1)[1]
        assert terminal.find("on the GPU (device=cuda")  # the stack says where its workers run

        client = Client(url, owner="gail")
        job = client.submit(SAMPLE, {"language": "en"})

        # the scaler starts a worker for the queued job; it stops at the preflight, before any claim
        exited = f"exited with code {int(WorkerExit.DEVICE)} (its GPU failed the preflight; it claimed nothing)"
        wait_until(lambda: bool(terminal.find(exited)), 180)
        said = terminal.find(exited)[0]
        assert "worker not started: GPU preflight failed at driver: no NVIDIA driver: libcuda.so.1" in said

        logs = sorted((data / "workers").glob("*.log"))
        ended = [log for log in logs if log.read_text().strip()]
        assert ended
        for log in ended:  # each worker printed its one line, and nothing else
            [line] = log.read_text().strip().splitlines()
            fields = json.loads(line)
            assert (fields["level"], fields["event"], fields["exit_code"]) == ("ERROR", WORKER_NOT_STARTED, 69)
            assert "What to do: run GPU workers on an AMI with a current NVIDIA driver" in fields["message"]

        # the scaler (every second here) starts no other worker for the back-off, and says so
        held = "pool's last worker(s) could not start (1 lately); starting none for"
        wait_until(lambda: bool(terminal.find(held)), 30)
        assert len(terminal.find("scaler: started")) == 1 and len(terminal.find(exited)) == 1

        record = client.get(job["job_id"])
        assert (record["status"], record["attempt"]) == ("queued", 0)  # no attempt spent
        assert not terminal.find(f"job {job['job_id'][:8]}: queued → running")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    assert terminal.find("local stack stopped")
