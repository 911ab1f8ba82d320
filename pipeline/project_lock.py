"""One run owns a project at a time: a lock file in the project folder.

`run.lock` is held with an OS lock (fcntl on POSIX, msvcrt on Windows) for as long as the
run lives, and names its holder (pid, host, since) so a second `mikupal run` can say who has
the project. The kernel drops the OS lock when the holder dies (kill -9 included), so a
lock left by a killed process is simply free: the next run takes it over and says so.

Machines sharing the folder over a network file system: NFS carries POSIX locks to the
server. Where a file system does not, the holder also refreshes the file's mtime every
HEARTBEAT_S, and a record from another host is honoured while that heartbeat is fresh even
if the OS lock could be taken.

Only runs (and repair/restore, which replace the database) take the lock: review, status
and export read and write project.db through SQLite's own locking and never wait for it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "run.lock"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 90.0  # a foreign host's record older than this is a dead holder
PROBE_GRACE_S = 2.0  # a run retries this long before it reports the project held

try:  # POSIX
    import fcntl

    # flock: owned by the open file, so another open()+close() of run.lock in this process
    # (reading the record) cannot drop it, as it would a POSIX record lock. Linux NFS
    # clients carry flock to the server as a POSIX lock.
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


@dataclass
class Holder:
    pid: int
    host: str
    since: str
    command: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"


class ProjectLocked(Exception):
    """Another run holds the project; the message says who and what to do."""

    def __init__(self, root: Path, holder: Holder | None):
        self.root, self.holder = root, holder
        who = holder.describe() if holder else "another process"
        super().__init__(f"{root}: a run already holds this project ({who}); wait for it to finish, "
                         f"stop it, or add --wait to start when it is done")


# Locks held by this process, by lock path: POSIX locks are per process, so a second
# acquire from another thread of the same process would otherwise succeed silently.
_held: dict[str, "RunLock"] = {}
_held_guard = threading.Lock()


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)  # (no os.pread on Windows)
    return os.read(fd, 65536)


def read_holder(root: str | Path) -> Holder | None:
    """The record in run.lock (it may belong to a dead holder; see `holder()`)."""
    path = Path(root) / LOCK_NAME
    try:
        mine = _held.get(str(path.resolve()))
        if mine is not None and mine.fd is not None:
            raw = _read_fd(mine.fd)  # never reopen a file this process holds locked (NFS: POSIX locks)
        else:
            raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "pid" not in data:
        return None
    return Holder(int(data["pid"]), str(data.get("host", "")), str(data.get("since", "")), str(data.get("command", "")))


def _record_is_live(path: Path, rec: Holder | None) -> bool:
    """A record whose holder may still be running even though the OS lock was free."""
    if rec is None or rec.host == socket.gethostname():
        return False  # this kernel's lock is authoritative here: free means the holder is gone
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    return age < STALE_AFTER_S


class RunLock:
    """The project's run lock. `with RunLock(root):` or acquire()/release()."""

    def __init__(self, root: str | Path, command: str = "mikupal run"):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.command = command
        self.fd: int | None = None
        self.took_over: Holder | None = None  # the dead holder whose lock this one replaced
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ---- acquiring ---------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lock now, or return False (see `holder()` for who has it)."""
        key = str(self.path.resolve())
        with _held_guard:
            if key in _held:
                return False
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                return False
            try:
                raw = _read_fd(fd).decode("utf-8")
                d = json.loads(raw) if raw.strip() else None
                rec = Holder(int(d["pid"]), str(d.get("host", "")), str(d.get("since", "")),
                             str(d.get("command", ""))) if isinstance(d, dict) and "pid" in d else None
            except (OSError, ValueError, KeyError, TypeError):
                rec = None
            if _record_is_live(self.path, rec):
                _unlock(fd)
                os.close(fd)
                return False
            self.took_over = rec
            self.fd = fd
            me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _utc_now(), "command": self.command}
            data = json.dumps(me).encode()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
            os.fsync(fd)
            _held[key] = self
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()
        return True

    def acquire(self, wait: bool = False, poll_s: float = 0.5, on_wait=None) -> "RunLock":
        """Take the lock; raise ProjectLocked, or with wait=True block until it is free.

        `on_wait(holder)` is called once when waiting starts (the CLI prints who it waits for)."""
        told = False
        # `holder()` (status, the app) takes the OS lock for a moment to see whether it is free:
        # a run starting in that moment tries again briefly before it calls the project held.
        probe_grace = time.monotonic() + PROBE_GRACE_S
        while not self.try_acquire():
            holder = self.holder()
            if not wait:
                if time.monotonic() < probe_grace:
                    time.sleep(0.05)
                    continue
                raise ProjectLocked(self.root, holder)
            if not told and on_wait is not None:
                on_wait(holder)
                told = True
            time.sleep(poll_s)
        return self

    def holder(self) -> Holder | None:
        return read_holder(self.root)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    # ---- releasing ---------------------------------------------------------------------
    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        with _held_guard:
            _held.pop(str(self.path.resolve()), None)
            try:
                # The file stays (removing it would race with a process that just opened it);
                # an empty record means "free".
                os.ftruncate(self.fd, 0)
                _unlock(self.fd)
            finally:
                os.close(self.fd)
                self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def holder(root: str | Path) -> Holder | None:
    """Who runs this project now (None when nobody does): for status and the app.

    Probes the OS lock without touching the holder record (a free lock keeps its old record)."""
    path = Path(root, LOCK_NAME)
    key = str(path.resolve()) if path.exists() else None
    if key is None:
        return None
    with _held_guard:
        if key in _held:  # this process runs it
            return read_holder(root)
        fd = os.open(path, os.O_RDWR)
        try:
            free = _try_lock(fd)
            if free:
                _unlock(fd)
        finally:
            os.close(fd)
    rec = read_holder(root)
    if free and not _record_is_live(path, rec):  # another host's fresh record still counts
        return None
    return rec


# ---- the app's hold on an open project ------------------------------------------------------

OPEN_NAME = "open.lock"


class OpenHold:
    """A shared lock the app holds while a project is open in it. Any number of apps (and
    runs) may share it; `repair`, which moves project.db aside, needs it exclusively, so it
    never swaps the file under a review session's open connections."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / OPEN_NAME
        self.fd: int | None = None

    def acquire(self) -> "OpenHold":
        if self.fd is None and os.name == "posix":
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return self  # a read-only folder: nothing can repair it from here either
            fcntl.flock(fd, fcntl.LOCK_SH)
            self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def open_elsewhere(root: str | Path) -> bool:
    """Whether an app has the project open (holds OpenHold); False where it cannot be known."""
    path = Path(root) / OPEN_NAME
    if os.name != "posix" or not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
