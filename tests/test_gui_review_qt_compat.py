"""The PySide6 emit refcount work-around keeps the True singleton's count steady."""
from __future__ import annotations

import os
import sys
import types

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Signal, SignalInstance  # noqa: E402

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


def test_the_wrapper_is_installed_exactly_when_the_binding_needs_it():
    # The binding's own emit is a C method descriptor; the work-around replaces it with a
    # Python function. Whatever this PySide6 is, the answer must say which one is in place ...
    installed = qt_compat.fix_signal_emit_refcount()
    wrapped = isinstance(SignalInstance.__dict__["emit"], types.FunctionType)
    assert installed is wrapped
    # ... and afterwards emit no longer steals a reference, patched or not.
    assert qt_compat._emit_steals_a_reference() is False


def test_the_wrapper_gives_back_the_reference_emit_returns(monkeypatch):
    """Force the wrapper onto this binding (whose emit does not steal): each emit then adds
    one reference to True, which is exactly what it gives back on a binding that steals one."""
    monkeypatch.setattr(qt_compat, "_applied", False)
    monkeypatch.setattr(qt_compat, "_emit_steals_a_reference", lambda: True)
    monkeypatch.setattr(SignalInstance, "emit", SignalInstance.emit)  # restored after the test
    if isinstance(SignalInstance.__dict__["emit"], types.FunctionType):
        return  # this binding steals: already covered by the test above
    assert qt_compat.fix_signal_emit_refcount() is True
    e = _Emitter()
    before = sys.getrefcount(True)
    all_true = all([e.plain.emit() is True for _ in range(100)])  # the list is gone before counting
    gained = sys.getrefcount(True) - before
    assert all_true and 100 <= gained < 110
