"""Waiting for a condition, never for a time: a test that needs "the child holds the lock" or
"the job is recorded" polls for exactly that, with a timeout generous enough that only a real
hang reaches it (a loaded machine is slower, never wrong)."""
from __future__ import annotations

import time
from typing import Callable


def wait_until(cond: Callable[[], object], timeout: float = 120.0, what: str | Callable[[], str] = "the condition",
               every: float = 0.05) -> None:
    """Return as soon as cond() is true; AssertionError naming `what` (a text, or a function
    giving one, e.g. a child's output) if it is still false after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(every)
