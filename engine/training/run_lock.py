"""One writer per run folder: an exclusive flock on OUT/.lock, held for the whole run.

The kernel releases a flock when its holder exits in any way (even SIGKILL), so a lock can
never outlive its process; what can outlive it is the holder's note in the file (pid, host,
start time), which a clean exit erases. A new run that gets the lock and finds a note knows
the previous holder died without cleaning up (a stale lock) and says so; a run that does not
get the lock is refused with the holder's note.

Under torchrun only rank 0 writes the folder, so only rank 0 takes the lock (the loop shares
the outcome with the other ranks). flock works on local file systems and on NFS v4 (where
Linux maps it to a POSIX lock); on other network file systems it may lock nothing.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Callable

LOCK_NAME = ".lock"


class RunFolderLocked(RuntimeError):
    """Another process is training into the same folder."""


def _holder_note() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _describe(note: dict) -> str:
    return f"pid {note.get('pid', '?')} on host {note.get('host', '?')}, started {note.get('started', '?')}"


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """`with RunLock(out, say):` holds OUT/.lock exclusively, or raises RunFolderLocked."""

    def __init__(self, folder: Path | str, say: Callable[[str], None] = print):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.say = say
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"out={self.folder} is a file, not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note = self._read(fd)
            os.close(fd)
            raise RunFolderLocked(
                f"{self.folder} is in use by another training run ({_describe(note)}; lock file {self.path}). "
                "Wait for it to finish, stop it, or choose another out=") from None
        except BaseException:
            os.close(fd)
            raise
        stale = self._read(fd)
        if stale:
            here = stale.get("host") == socket.gethostname()
            fate = ("no longer running" if not _pid_alive(stale.get("pid")) else "running but not holding the lock") \
                if here else "on another host, not holding the lock"
            self.say(f"taking over the stale lock of {self.folder}: its holder ({_describe(stale)}) is {fate}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder_note()).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # erase our note: an empty lock file is a clean one
        finally:
            os.close(fd)  # closing drops the flock

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            text = os.pread(fd, 4096, 0).decode()
            note = json.loads(text) if text.strip() else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "? (unreadable lock note)"}
        return note if isinstance(note, dict) else {}

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
