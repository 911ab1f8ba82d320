"""The PySide6 emit refcount work-around keeps the True singleton's count steady."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Signal  # noqa: E402

from mikupal_gui import qt_compat  # noqa: E402


class _Emitter(QObject):
    plain = Signal()
    value = Signal(float)


def test_many_emits_do_not_drain_true():
    e = _Emitter()
    got = []
    e.value.connect(got.append)
    before = sys.getrefcount(True)
    for i in range(20000):  # more than True's count in a fresh interpreter: the bug would abort here
        e.plain.emit()
        e.value.emit(float(i))
    assert len(got) == 20000
    assert abs(sys.getrefcount(True) - before) < 50
    assert qt_compat.fix_signal_emit_refcount() in (True, False)
