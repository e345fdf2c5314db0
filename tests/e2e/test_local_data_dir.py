"""One local stack per data folder, as a user meets it: `local up` on the default folder (the
user's, printed at start), the job commands find it with no --api, `local status` says where it
is, a second `local up` on the same folder is refused naming the folder and the running stack,
`make demo` (`batchscribe demo`) runs beside it on a folder of its own, and `local down` stops
it as Ctrl-C does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchscribe.settings import ClientSettings
from tests.e2e.local_up import API_LINE, local_up

pytestmark = pytest.mark.slow


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchscribe_cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_one_stack_per_data_folder(tmp_path: Path) -> None:
    # a user with their own data home and no API configured, in some folder of theirs
    env = {k: v for k, v in os.environ.items() if k != ClientSettings.env_name("api")}
    env |= {"XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    folder = (tmp_path / "xdg" / "batchscribe").resolve()

    with local_up(None, "--max-workers", "0", env=env) as stack:
        started = stack.wait_for("local stack up")
        api = stack.wait_for(API_LINE).split("=", 1)[1]
        assert f"data folder {folder}" in started  # said where it keeps its state

        # the job commands find it without --api
        listed = cli("list", "--owner", "frank", env=env)
        assert listed.returncode == 0 and "no jobs" in listed.stderr, listed.stderr
        status = cli("local", "status", env=env)
        assert status.returncode == 0 and api in status.stdout and str(folder) in status.stdout

        # a second stack on the same folder is refused, before it starts anything
        second = cli("local", "up", "--port", "0", env=env, timeout=60)
        assert second.returncode == 3
        assert f"data folder {folder}" in second.stderr and api in second.stderr, second.stderr

        # the demo runs beside it, on its own folder, and leaves this one alone
        before = (folder / "endpoint.json").read_text()
        demo = cli("demo", env=env, timeout=300)
        assert demo.returncode == 0, demo.stderr[-2000:]
        assert (folder / "endpoint.json").read_text() == before

        # `local down` stops it as Ctrl-C does: its state saved, its lock gone
        down = cli("local", "down", env=env, timeout=150)
        assert down.returncode == 0, down.stderr
        assert stack.proc.wait(timeout=30) == 0
        assert (folder / "state" / "dynamodb.json").exists()

    gone = cli("local", "status", env=env)
    assert gone.returncode == 3 and f"no local stack is running on the data folder {folder}" in gone.stderr
