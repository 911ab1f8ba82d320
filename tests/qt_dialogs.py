"""Answering the app's modal dialogs from a test. A modal dialog runs its own event loop, so
the answer is posted before the action that opens it and acts once the dialog is up."""
from __future__ import annotations

import time
from typing import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication


def answer_next_modal(kind: type, act: Callable, timeout_s: float = 60.0) -> None:
    """Once a `kind` (e.g. QInputDialog) is the active modal widget, call act(dialog). Looks
    every 20 ms and gives up after `timeout_s`: the test then fails on what it expected."""
    deadline = time.monotonic() + timeout_s

    def look():
        dlg = QApplication.activeModalWidget()
        if isinstance(dlg, kind):
            act(dlg)
        elif time.monotonic() < deadline:
            QTimer.singleShot(20, look)

    QTimer.singleShot(0, look)
