"""Which skips a product test may take, and the "skipped, by reason" block at the end of a run.

A test may skip only for something the README names as optional: the real third-party weights
(../shared/models, MIKUPAL_TEST_MODELS), libVLC (the player falls back to PyAV frames), or an
operating system the check cannot run on. Everything `make test` installs (the dev and cluster
extras, ffmpeg, espeak-ng, Xvfb) and every module of the product itself must be there: a skip
for one of them hides an install or import bug, so this plugin turns it into a failure.

conftest.py re-exports the hooks; tests/test_skips_policy.py runs them on small test files.
"""
from __future__ import annotations

import re
from collections import defaultdict

import pytest

# (pattern the skip reason must match, the README's word for why it is optional)
ALLOWED_SKIPS: list[tuple[str, str]] = [
    (r"^real weights not found at ", "real weights are optional (README: Tests use real models ... when present)"),
    (r"^libVLC is not installed", "libVLC is optional (README: the app shows frames decoded with PyAV)"),
    (r"^only Linux runs without a display server$", "an operating-system check"),
    (r"needs a POSIX process probe$", "an operating-system check"),
]

_POLICY_HELP = ("a test may skip only for real weights, libVLC or the operating system "
                "(tests/skip_policy.py ALLOWED_SKIPS); everything make test installs must import")


def allowed(reason: str) -> bool:
    return any(re.search(p, reason) for p, _ in ALLOWED_SKIPS)


def skip_reason(report) -> str | None:
    """The reason of a skipped report (test or collection), None if it did not skip."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return None
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        reason = str(lr[2])
    else:
        reason = str(getattr(lr, "reprcrash", None) and lr.reprcrash.message or lr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _enforce(report) -> None:
    reason = skip_reason(report)
    if reason is not None and not allowed(reason):
        report.outcome = "failed"
        report.longrepr = f"skip not allowed: {reason!r}; {_POLICY_HELP}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _enforce(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _enforce(outcome.get_result())  # a module-level importorskip skips the whole file


def pytest_terminal_summary(terminalreporter):
    by_reason: dict[str, list[str]] = defaultdict(list)
    for rep in terminalreporter.stats.get("skipped", []):
        reason = skip_reason(rep)
        if reason is not None:
            by_reason[reason].append(rep.nodeid)
    if not by_reason:
        return
    tr = terminalreporter
    tr.section("skipped, by reason", sep="-")
    for reason, ids in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        tr.write_line(f"{len(ids):4d}  {reason}")
        shown = ", ".join(ids[:3]) + (f", ... ({len(ids) - 3} more)" if len(ids) > 3 else "")
        tr.write_line(f"      {shown}")
