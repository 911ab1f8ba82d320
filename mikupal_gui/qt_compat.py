"""Work-arounds for bugs in the installed Qt binding, applied once at import.

PySide6 6.12.0: ``SignalInstance.emit()`` returns ``True`` without taking a reference, so every
Python-side emit steals one reference to the ``True`` singleton; after a few thousand emits
(a review session, a video playing) the interpreter aborts with "Fatal Python error:
bool_dealloc". The fix is probed, not version-matched: a throwaway signal is emitted and the
wrapper is installed only if ``True`` lost a reference, so a fixed PySide6 is left alone.
"""
from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal, SignalInstance

_applied = False


def _emit_steals_a_reference() -> bool:
    class _Probe(QObject):
        ping = Signal()

    p = _Probe()
    before = sys.getrefcount(True)
    for _ in range(8):
        p.ping.emit()
    lost = before - sys.getrefcount(True)
    if lost > 0:  # give back what the probe took
        for _ in range(lost):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
    return lost >= 8


def fix_signal_emit_refcount() -> bool:
    """Install the emit wrapper if this PySide6 needs it; returns whether it is installed."""
    global _applied
    if _applied:
        return True
    if not _emit_steals_a_reference():
        return False
    original = SignalInstance.emit
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes = [ctypes.py_object]

    def emit(self, *args):
        result = original(self, *args)
        if result is True or result is False:
            incref(result)  # the reference emit() should have returned
        return result

    SignalInstance.emit = emit
    _applied = True
    return True


fix_signal_emit_refcount()
