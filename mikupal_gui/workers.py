"""Background work for the GUI: pipeline runs, exports and slow queries off the GUI thread.

The runner calls `on_event` from its own threads; emitting a Qt signal there queues the
event to the GUI thread (the receivers live there), so widgets are only touched by the
thread that owns them and the event loop keeps painting while the pipeline works.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from . import keys


@dataclass
class RunRequest:
    """Everything the run panel chose; turned into a Project (with overrides) and a Runner."""

    project_root: str
    stages: list  # stage names, or Stage classes (plugins, tests) as the Runner accepts
    backend: str | None = None
    model: str | None = None
    runs: int | None = None
    workers: dict[str, int] = field(default_factory=dict)
    devices: str | None = None
    video_ids: list[int] | None = None
    extra_overrides: list[str] = field(default_factory=list)

    def overrides(self) -> list[str]:
        """`--set`-style overrides, the same mechanism as `mikupal run --set`."""
        out = []
        if self.backend:
            out.append(f"emotion.backend={self.backend}")
        if self.model:
            out.append(f'emotion.model="{self.model}"')
        if self.runs:
            out.append(f"emotion.runs={int(self.runs)}")
        return out + list(self.extra_overrides)


class RunThread(QThread):
    """Runs `mikupal.runner.Runner` in a QThread and re-emits its events as signals.

    runFinished/runFailed are emitted on the GUI thread once the thread has ended, so a
    receiver may drop the thread object straight away."""

    event = Signal(object)        # mikupal.events.ProgressEvent (queued to the GUI thread)
    runFinished = Signal(object)  # mikupal.events.RunSummary, or None when the run could not start
    runFailed = Signal(str)       # one line: why the run could not start or crashed

    def __init__(self, request: RunRequest, parent=None):
        super().__init__(parent)
        self.request = request
        self.summary = None
        self.error = ""
        self._runner = None
        self._cancel_requested = False
        self.finished.connect(self._deliver)

    def cancel(self) -> None:
        """Ask the runner to stop (items in flight finish; the run is marked cancelled)."""
        self._cancel_requested = True
        if self._runner is not None:
            self._runner.cancel()

    def run(self) -> None:  # QThread entry point (worker thread)
        try:
            from mikupal.project import Project
            from mikupal.runner import Runner

            keys.export_to_environment()
            project = Project.open(self.request.project_root, self.request.overrides())
            self._runner = Runner(
                project,
                self.request.stages or None,
                workers=self.request.workers or None,
                devices=self.request.devices or None,
                on_event=self.event.emit,
                video_ids=self.request.video_ids,
            )
            if self._cancel_requested:
                self._runner.cancel()
            self.summary = self._runner.run()
        except Exception as e:  # noqa: BLE001 - shown to the user as one line, never a traceback
            from mikupal.events import one_line

            self.error = one_line(e) or type(e).__name__

    def _deliver(self) -> None:  # GUI thread, after run() returned
        self.wait()
        if self.error:
            self.runFailed.emit(self.error)
        self.runFinished.emit(self.summary)


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
