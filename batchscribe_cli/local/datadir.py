"""The local stack's data folder: where it is unless `--data-dir` says (one per user, not the
current folder), the lock that keeps one stack at a time on it, and `endpoint.json`, where the
running stack says where its API is, so that the other commands (and `local status`/`down`)
find it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

LOCK_FILE = "lock"
ENDPOINT_FILE = "endpoint.json"


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/batchscribe`, else `~/.local/share/batchscribe`: the same folder from
    wherever the stack is started (the freedesktop.org base directory for user data)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "batchscribe"


class DataDirInUse(Exception):
    """Another local stack holds the data folder."""

    def __init__(self, folder: Path, running: dict[str, Any] | None) -> None:
        where = f" (API {running['api']}, pid {running['pid']})" if running else ""
        super().__init__(f"another local stack is running on the data folder {folder}{where}")
        self.folder = folder
        self.running = running


@dataclass
class DataDirLock:
    """An exclusive lock on `folder/lock` (flock), held for the stack's life: a second stack on
    the same folder would restore and overwrite the first one's snapshot and endpoint. The
    kernel drops the lock when the process ends, however it ends: a stale lock file never
    blocks a new stack."""

    folder: Path
    _file: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = (self.folder / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DataDirInUse(self.folder.resolve(), read_endpoint(self.folder)) from None
        self._file = handle
        return self

    def publish(self, api: str, moto: str) -> None:
        """Say where this stack's API is (read by `running_stack` in other processes)."""
        data = {"api": api, "moto": moto, "pid": os.getpid(), "data_dir": str(self.folder.resolve())}
        tmp = self.folder / (ENDPOINT_FILE + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.folder / ENDPOINT_FILE)

    def release(self) -> None:
        if self._file is None:
            return
        (self.folder / ENDPOINT_FILE).unlink(missing_ok=True)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def read_endpoint(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "api" in data and "pid" in data else None


def is_locked(folder: Path) -> bool:
    """Whether a live stack holds the folder (tried without taking it for long)."""
    path = folder / LOCK_FILE
    if not path.exists():
        return False
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def running_stack(folder: Path) -> dict[str, Any] | None:
    """The running stack's endpoint on `folder` ({api, moto, pid, data_dir}), or None when no
    stack holds it (an endpoint.json left by a killed stack is not believed)."""
    return read_endpoint(folder) if is_locked(folder) else None
