"""Background work for the GUI: pipeline runs in a child process, exports and slow queries
off the GUI thread.

A run is the same `mikupal run` a user would type, in a child process (RunProcess): a
native crash in CTranslate2, onnxruntime or torch ends that process, and the app and the
review session stay up. Its progress events arrive as JSON lines on the child's stdout and
are re-emitted as Qt signals on the GUI thread. Other tasks run in a QThread (TaskThread).
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QProcess, QThread, QTimer, Signal

from . import keys


@dataclass
class RunRequest:
    """Everything the run panel chose, as the `mikupal run` command line a user would type."""

    project_root: str
    stages: list[str]
    backend: str | None = None
    model: str | None = None
    runs: int | None = None
    workers: dict[str, int] = field(default_factory=dict)
    devices: str | None = None
    extra_overrides: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        """`mikupal run` arguments (after the program): the same flags as the terminal."""
        out = ["run", str(self.project_root), "--events", "jsonl"]
        if self.stages:
            out += ["--stages", ",".join(self.stages)]
        if self.backend:
            out += ["--backend", self.backend]
        if self.model:
            out += ["--model", self.model]
        if self.runs:
            out += ["--runs", str(int(self.runs))]
        for stage, n in sorted(self.workers.items()):
            out += ["--workers", f"{stage}={int(n)}"]
        if self.devices:
            out += ["--devices", self.devices]
        for o in self.extra_overrides:
            out += ["--set", o]
        return out

    def command_line(self) -> str:
        """What to type in a terminal for the same run (paths quoted)."""
        return shlex.join(["mikupal", *[a for a in self.args() if a not in ("--events", "jsonl")]])


class RunProcess(QObject):
    """A run in a child process (`python -m mikupal.cli run ... --events jsonl`), so a crash in
    a model library ends the child, never the app. Progress arrives as JSON lines on the
    child's stdout; its last stderr line says why it stopped when it could not run.

    done(status, message): status is finished | cancelled | failed (the run reported it, or
    it could not start) | crashed (the process died without finishing the run)."""

    event = Signal(object)     # mikupal.events.ProgressEvent, on the GUI thread
    done = Signal(str, str)

    GRACE_MS = 15000  # after Cancel: items in flight may finish; then the child is killed

    def __init__(self, request: RunRequest, parent=None):
        super().__init__(parent)
        self.request = request
        self.proc = QProcess(self)
        self.proc.setProgram(sys.executable)
        # A frozen app is itself the `mikupal` command (packaging/launcher.py); Python takes -m.
        self.proc.setArguments([*([] if getattr(sys, "frozen", False) else ["-m", "mikupal.cli"]), *request.args()])
        self.proc.setWorkingDirectory(str(request.project_root))
        self.proc.readyReadStandardOutput.connect(self._read_stdout)
        self.proc.readyReadStandardError.connect(self._read_stderr)
        self.proc.finished.connect(self._finished)
        self.proc.errorOccurred.connect(self._error)
        self._out = b""
        self._err: list[str] = []
        self._err_buf = b""
        self.run_id: int | None = None
        self.finished_stages: set[str] = set()
        self.final = None  # the run_finished event
        self.cancel_requested = False
        self._killed = False
        self._reported = False
        self._kill_timer = QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    # ---- control ------------------------------------------------------------------------
    def start(self) -> None:
        keys.export_to_environment()  # keys from the OS keyring reach the child's environment
        self.proc.start()

    def is_running(self) -> bool:
        return self.proc.state() != QProcess.ProcessState.NotRunning

    def cancel(self, grace_ms: int | None = None) -> None:
        """SIGTERM (the run cancels cooperatively, as after Ctrl-C), then kill after the grace."""
        if not self.is_running():
            return
        self.cancel_requested = True
        self.proc.terminate()
        self._kill_timer.start(self.GRACE_MS if grace_ms is None else grace_ms)

    def _kill(self) -> None:
        if self.is_running():
            self._killed = True
            self.proc.kill()

    def wait(self, ms: int) -> bool:
        return self.proc.waitForFinished(ms) if self.is_running() else True

    @property
    def log_path(self) -> Path | None:
        return Path(self.request.project_root) / "logs" / f"run-{self.run_id}.log" if self.run_id else None

    # ---- reading ------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        from mikupal.events import ProgressEvent

        self._out += bytes(self.proc.readAllStandardOutput())
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            try:
                ev = ProgressEvent(**json.loads(line))
            except (ValueError, TypeError):
                continue  # not an event (a library printing to stdout)
            self.run_id = ev.run_id or self.run_id
            if ev.kind == "stage_finished" and ev.stage:
                self.finished_stages.add(ev.stage)
            if ev.kind == "run_finished":
                self.final = ev
            self.event.emit(ev)

    def _read_stderr(self) -> None:
        self._err_buf += bytes(self.proc.readAllStandardError())
        *lines, self._err_buf = self._err_buf.split(b"\n")
        self._err = (self._err + [ln.decode("utf-8", "replace").strip() for ln in lines if ln.strip()])[-40:]

    def last_error_line(self) -> str:
        from mikupal.events import one_line

        for line in reversed(self._err + [self._err_buf.decode("utf-8", "replace").strip()]):
            if line.startswith("mikupal: "):
                return one_line(line[len("mikupal: "):])
        tail = [ln for ln in self._err if ln] or [""]
        return one_line(tail[-1])

    # ---- the end ------------------------------------------------------------------------
    def _error(self, err) -> None:
        if err == QProcess.ProcessError.FailedToStart:
            self._report("failed", f"cannot start {sys.executable} -m mikupal.cli ({self.proc.errorString()})")

    def _finished(self, code: int, status) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        self._read_stderr()
        if self.final is not None:
            self._report(self.final.status, self.final.message)
        elif self.cancel_requested:
            self._report("cancelled", "stopped" + (" (killed after the grace period)" if self._killed else ""))
        elif status == QProcess.ExitStatus.CrashExit:
            open_ = [s for s in self.request.stages if s not in self.finished_stages]
            where = f" before stage {', '.join(open_)} finished" if open_ else ""
            log = f"; log: {self.log_path}" if self.log_path else ""
            self._report("crashed", f"the run process crashed{where} (a native error, e.g. in a model library); "
                                    f"finished items are kept and Start resumes{log}")
        else:
            self._report("failed", self.last_error_line() or f"mikupal run exited with code {code}")

    def _report(self, status: str, message: str) -> None:
        if not self._reported:
            self._reported = True
            self.done.emit(status, message)


class TaskThread(QThread):
    """Runs `fn(progress)` off the GUI thread; `progress(done, total, message)` becomes a
    signal. Raising `Cancelled` from progress (after `cancel()`) stops cooperative tasks.
    succeeded/failed are emitted on the GUI thread after the thread has ended."""

    progress = Signal(int, int, str)
    succeeded = Signal(object)
    failed = Signal(str)

    class Cancelled(Exception):
        pass

    def __init__(self, fn: Callable[[Callable[[int, int, str], None]], Any], parent=None):
        super().__init__(parent)
        self._fn = fn
        self._cancel = False
        self.result = None
        self.error: str | None = None
        self.finished.connect(self._deliver)

    def cancel(self) -> None:
        self._cancel = True

    def _progress(self, done: int, total: int, message: str = "") -> None:
        if self._cancel:
            raise TaskThread.Cancelled("cancelled")
        self.progress.emit(int(done), int(total), str(message))

    def run(self) -> None:
        try:
            self.result = self._fn(self._progress)
        except TaskThread.Cancelled:
            self.error = "cancelled"
        except Exception as e:  # noqa: BLE001
            from mikupal.events import one_line

            msg = str(e) or type(e).__name__
            if not isinstance(e, (ValueError, OSError, RuntimeError)):
                msg = f"{type(e).__name__}: {msg}"
                if os.environ.get("MIKUPAL_DEBUG"):
                    traceback.print_exc()
            self.error = one_line(msg)

    def _deliver(self) -> None:  # GUI thread, after run() returned
        self.wait()
        if self.error is not None:
            self.failed.emit(self.error)
        else:
            self.succeeded.emit(self.result)
