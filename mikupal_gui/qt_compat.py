"""Work-arounds for bugs in the installed Qt binding, applied once at import.

PySide6 6.12.0: ``SignalInstance.emit()`` returns ``True`` without taking a reference, so every
Python-side emit steals one reference to the ``True`` singleton; after a few thousand emits
(a review session, a video playing) the interpreter aborts with "Fatal Python error:
bool_dealloc". The fix is probed, not version-matched: a throwaway signal is emitted and the
wrapper is installed only if ``True`` lost a reference, so a fixed PySide6 is left alone.

The same release also steals a reference to ``None`` on every call of a void C++ method
(QPainter.setRenderHint, drawRect, ...). That cannot be patched method by method; the app
warns once on stderr (``binding_problem()`` gives the line for `mikupal doctor`), and
pyproject.toml excludes 6.12.0.
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


def binding_problem() -> str | None:
    """One line naming a known-bad Qt binding and the fix, or None when it looks healthy."""
    from PySide6.QtGui import QImage, QPainter
    import PySide6

    img = QImage(4, 4, QImage.Format_RGB32)
    p = QPainter(img)
    before = sys.getrefcount(None)
    for _ in range(16):
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    lost = before - sys.getrefcount(None)
    p.end()
    for _ in range(max(0, lost)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))
    if lost >= 16:
        return (f"PySide6 {PySide6.__version__} has a reference-count bug that aborts MIKU-PAL after a while "
                "(\"Fatal Python error: none_dealloc\"); install another release: pip install \"PySide6!=6.12.0\"")
    return None


fix_signal_emit_refcount()
_problem = binding_problem()
if _problem:
    print("warning: " + _problem, file=sys.stderr)
