"""One process per output folder: an exclusive lock on a run directory.

Two ``train.py`` (or ``gan train``) processes pointed at one ``--out`` would otherwise share
it silently: the second resumes from the first's backup, both write ``history.csv`` and
``model.keras`` is whichever finished last. ``RunLock(folder)`` takes an exclusive
``flock`` on ``folder/.lock`` for as long as the run lives; a second process gets
``RunLockedError`` naming the holder (pid, host, start time, command).

The lock belongs to the open file, not to the file on disk: the kernel releases it when the
holder exits in any way (``kill -9`` included), so a lock file left behind by a killed run
never blocks a restart; only a live holder does. On a network file system ``flock`` is only
as good as the server's lock support.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class RunLock:
    """``with RunLock(folder):`` holds ``folder`` (created if missing) exclusively."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._descriptor: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise RunLockedError(
                f"{self.folder} is in use by another process ({describe_holder(holder)}); "
                "wait for it to end, stop it, or choose another --out") from None
        except BaseException:
            os.close(descriptor)
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv)[:500]}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        self._descriptor = descriptor
        return self

    def release(self) -> None:
        if self._descriptor is None:
            return
        # Empty the record before unlocking: a file that names a pid is a live holder.
        os.ftruncate(self._descriptor, 0)
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def _read_holder(descriptor: int) -> dict:
    try:
        return json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    """``pid 123 on host-a since 2026-12-07T21:00:00+00:00: train.py --out runs/x``."""
    if not holder.get("pid"):
        return "pid unknown: it is starting up"
    text = f"pid {holder['pid']} on {holder.get('host', '?')}"
    if holder.get("started"):
        text += f" since {holder['started']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text
