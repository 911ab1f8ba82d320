"""What a run tells its listeners (CLI progress bars, the GUI, logs) and how it names failures.

Events are plain dataclasses so a listener in another thread (a Qt signal bridge) or another
process (JSON) can carry them as is. Every text field is secret-free: messages pass `scrub`.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict, dataclass, field

from .emotion.redact import scrub
from .stage import StageError

EVENT_KINDS = ("run_started", "stage_progress", "item_error", "stage_finished", "run_finished")


@dataclass
class ProgressEvent:
    kind: str  # one of EVENT_KINDS
    run_id: int
    stage: str | None = None
    done: int = 0  # items finished in this stage this run (ok + failed)
    total: int = 0  # items known for this stage (grows as upstream stages emit)
    errors: int = 0
    rate: float = 0.0  # items/s
    eta_s: float | None = None
    message: str = ""  # one line, secret-free (errors: the item and the fix)
    video_id: int | None = None
    segment_id: int | None = None
    status: str = ""  # for run_finished: "finished" | "cancelled" | "failed"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class StageStats:
    """Counters of one stage in one run; also the source of its progress events."""

    name: str
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # videos whose inputs were missing (upstream stage not run)
    started_at: float | None = None
    finished_at: float | None = None
    last_emit: float = 0.0
    finished: bool = False

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def rate(self, now: float | None = None) -> float:
        if self.started_at is None or self.done == 0:
            return 0.0
        end = self.finished_at if self.finished_at is not None else (now or time.monotonic())
        return self.done / max(end - self.started_at, 1e-6)

    def eta(self, now: float | None = None) -> float | None:
        r = self.rate(now)
        return (self.total - self.done) / r if r > 0 else None

    def elapsed(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started_at


@dataclass
class RunSummary:
    run_id: int
    status: str  # "finished" | "cancelled" | "failed"
    stages: dict[str, StageStats] = field(default_factory=dict)
    elapsed_s: float = 0.0
    log_path: str = ""
    message: str = ""  # why a run failed (one line)

    @property
    def failed_items(self) -> int:
        return sum(s.failed for s in self.stages.values())

    @property
    def skipped_items(self) -> int:
        return sum(s.skipped for s in self.stages.values())

    @property
    def ok(self) -> bool:
        return self.status == "finished" and self.failed_items == 0 and self.skipped_items == 0


def one_line(text: object, limit: int = 400) -> str:
    s = " ".join(scrub(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def describe_failure(exc: BaseException) -> tuple[bool, str, str | None]:
    """(expected, message, detail) for an exception raised by a stage.

    A StageError is an expected per-item failure: its message is the user's line. Anything
    else is a bug or an environment problem: keep the traceback (scrubbed) as the detail.
    """
    if isinstance(exc, StageError):
        return True, one_line(exc), (scrub(exc.detail) if exc.detail else None)
    detail = scrub("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return False, one_line(f"{type(exc).__name__}: {exc}"), detail


class ScrubFilter(logging.Filter):
    """Masks API keys in every record that reaches the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = ()
        if record.exc_info:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True
