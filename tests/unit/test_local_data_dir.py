"""The local stack's data folder: one stack at a time holds it (a second is refused, told
which folder and which running stack), a lock left by a dead stack blocks nothing, and the
default folder is the user's, whatever the current folder is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchscribe_cli.local.datadir import DataDirInUse, DataDirLock, default_data_dir, running_stack


def test_a_second_lock_on_the_folder_is_refused_naming_the_folder_and_the_running_stack(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path).acquire()
    first.publish("http://127.0.0.1:8123", "http://127.0.0.1:9000")

    with pytest.raises(DataDirInUse) as refused:
        DataDirLock(tmp_path).acquire()

    assert str(tmp_path) in str(refused.value) and "http://127.0.0.1:8123" in str(refused.value)
    assert running_stack(tmp_path) == {
        "api": "http://127.0.0.1:8123",
        "moto": "http://127.0.0.1:9000",
        "pid": os.getpid(),
        "data_dir": str(tmp_path.resolve()),
    }
    first.release()
    assert running_stack(tmp_path) is None
    DataDirLock(tmp_path).acquire().release()  # free again


def test_a_dead_stacks_files_block_nothing(tmp_path: Path) -> None:
    # a process that took the lock, said where it was and was killed without a word
    code = (
        "import os, sys; from pathlib import Path; from batchscribe_cli.local.datadir import DataDirLock; "
        "DataDirLock(Path(sys.argv[1])).acquire().publish('http://127.0.0.1:1', 'http://127.0.0.1:2'); "
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert (tmp_path / "endpoint.json").exists()

    assert running_stack(tmp_path) is None  # its endpoint is not believed
    DataDirLock(tmp_path).acquire().release()


def test_the_default_folder_is_the_users_not_the_current_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    here = default_data_dir()
    monkeypatch.chdir("/")
    assert default_data_dir() == here == tmp_path / "home" / ".local" / "share" / "batchscribe"

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "batchscribe"
