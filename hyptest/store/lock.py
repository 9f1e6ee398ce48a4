"""One writer per run directory: a lock file holding the writer's pid, host and start time.

Local folders (``file://`` URLs included) use ``RUN_DIR/.hyptest.lock`` with an
exclusive :func:`fcntl.flock` on it: the kernel drops the lock when its holder
exits, even on ``kill -9``, so a lock can never be left held by a dead
process. The file's JSON (pid, host, start time, command) is what a refused
process prints. A file left by a dead holder is taken over, with a note; this
is the stale-lock rule "same host and pid no longer running", enforced by the
kernel. On network filesystems ``flock`` is as good as their lock manager
(NFSv4: yes; some FUSE mounts: no lock at all — hyptest then falls back to the
content rule below).

fsspec URLs (object stores) have no locks: the lock is the same JSON object,
created only when absent and read back to check that it is ours. That
narrows, but does not close, the window in which two writers starting at the
same moment both win; a lock whose holder is on this host and no longer
running is stale and taken over; a lock held from another host is only
removed by hand (the message names the object).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from .errors import StoreError

__all__ = ["LOCK_NAME", "LockError", "RunLock"]

#: Name of the lock file in a run directory.
LOCK_NAME = ".hyptest.lock"

#: Locks held by this process, by run-directory location: a nested acquire is a no-op.
_HELD: dict[str, "RunLock"] = {}


class LockError(StoreError):
    """Another process is writing to the run directory (a :class:`StoreError`: exit 2 in the CLI)."""


def _process_start(pid: int) -> str | None:
    """The start time of a process (Linux clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int, start: str | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pid_start": _process_start(os.getpid()),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500] if sys.argv else "",
        "token": uuid.uuid4().hex,
    }


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid 123 on host h (since 2025-01-01T00:00:00+00:00, `hyptest study a.yaml`)``."""
    if not holder:
        return "a process that left no details"
    command = f", `{holder['command']}`" if holder.get("command") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('started')}{command})"


class RunLock:
    """The exclusive writer lock of one run directory.

    Parameters
    ----------
    run : hyptest.store.RunDir
        The run directory (created if missing).
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self.key = run.location
        self.note: str | None = None
        self.info: dict[str, Any] = {}
        self._fd: int | None = None
        self._nested = False

    @property
    def where(self) -> str:
        return f"{self.run.location.rstrip('/')}/{LOCK_NAME}"

    # -- public ----------------------------------------------------------------------------------

    def acquire(self, *, wait: bool = False, poll_s: float = 0.25,
                on_wait: Callable[[str], None] | None = None) -> "RunLock":
        """Take the lock; with ``wait``, poll until it is free, else raise :class:`LockError` (a StoreError).

        ``on_wait(message)`` is called once when waiting starts.
        """
        if self.key in _HELD:
            self._nested = True
            return self
        told = False
        while True:
            holder = self._try_acquire()
            if holder is None:
                _HELD[self.key] = self
                return self
            message = (f"run directory {self.run.location} is in use by {describe_holder(holder)}; "
                       "one writer per run directory")
            if not wait:
                raise LockError(
                    f"{message}. Wait for it to finish, rerun with --wait to queue behind it, or use --out for "
                    f"another directory. If no such process exists, delete {self.where}."
                )
            if not told and on_wait is not None:
                on_wait(f"{message}; waiting for it to finish")
            told = True
            time.sleep(poll_s)

    def release(self) -> None:
        """Give the lock back (remove the lock file)."""
        if self._nested:
            return
        _HELD.pop(self.key, None)
        if self.run.is_local:
            if self._fd is None:
                return
            try:
                path = Path(self.run.path) / LOCK_NAME
                try:
                    if os.stat(path).st_ino == os.fstat(self._fd).st_ino:
                        os.unlink(path)  # still holding the flock: nobody can take a removed inode
                except OSError:
                    pass
            finally:
                os.close(self._fd)  # drops the flock
                self._fd = None
        else:
            try:
                current = json.loads(self.run.fs.cat_file(self._fs_lock()).decode("utf-8"))
                if current.get("token") == self.info.get("token"):
                    self.run.fs.rm_file(self._fs_lock())
            except Exception:  # already gone or unreadable: nothing of ours to remove
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- local: flock -----------------------------------------------------------------------------

    def _try_acquire(self) -> dict[str, Any] | None:
        """None when the lock is ours now, else the holder's details."""
        return self._try_local() if self.run.is_local else self._try_fs()

    def _try_local(self) -> dict[str, Any] | None:
        import fcntl

        folder = Path(self.run.path)
        path = folder / LOCK_NAME
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise StoreError(
                f"cannot create the lock file {path}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_fd(fd)
            os.close(fd)
            return holder or {}
        except OSError:  # no flock on this filesystem: the content rule decides
            os.close(fd)
            return self._try_content_local(path)
        try:
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # removed by its releaser meanwhile: retry
                os.close(fd)
                return self._try_local()
        except FileNotFoundError:
            os.close(fd)
            return self._try_local()
        previous = _read_fd(fd)
        if previous:
            self.note = (f"took over the lock of {describe_holder(previous)}, which is no longer running "
                         "(it was killed or crashed); its finished units are kept")
        self.info = _me()
        data = json.dumps(self.info, indent=1).encode("utf-8")
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, data)
        os.fsync(fd)
        self._fd = fd
        return None

    def _try_content_local(self, path: Path) -> dict[str, Any] | None:
        try:
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            holder = {}
        if holder and not self._stale(holder):
            return holder
        if holder:
            self.note = f"took over the stale lock of {describe_holder(holder)}, which is no longer running"
        self.info = _me()
        path.write_text(json.dumps(self.info, indent=1), encoding="utf-8")
        self._fd = os.open(path, os.O_RDONLY)
        return None

    # -- fsspec: content only ---------------------------------------------------------------------

    def _fs_lock(self) -> str:
        return self.run._fs_path(LOCK_NAME)

    def _try_fs(self) -> dict[str, Any] | None:
        fs = self.run.fs
        where = self._fs_lock()
        try:
            fs.makedirs(self.run._fs_path(), exist_ok=True)
            holder = json.loads(fs.cat_file(where).decode("utf-8")) if fs.isfile(where) else None
        except (OSError, ValueError):
            holder = {}
        if holder is not None and holder != {} and not self._stale(holder):
            return holder
        if holder:
            self.note = f"took over the stale lock of {describe_holder(holder)}, which is no longer running"
        self.info = _me()
        try:
            fs.pipe_file(where, json.dumps(self.info, indent=1).encode("utf-8"))
            time.sleep(0.05)
            mine = json.loads(fs.cat_file(where).decode("utf-8"))
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot write the lock {self.where}: {error}") from None
        if mine.get("token") != self.info["token"]:  # another writer won the race
            return mine
        return None

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell whether a process on another host runs
        try:
            pid = int(holder.get("pid", -1))
        except (TypeError, ValueError):
            return True
        return not _pid_alive(pid, holder.get("pid_start"))


def _read_fd(fd: int) -> dict[str, Any] | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 1 << 16)
        return json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (OSError, ValueError):
        return None
