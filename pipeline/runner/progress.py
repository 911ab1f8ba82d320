"""Progress of a run: per-stage counters and the throttled events built from them."""
from __future__ import annotations

import logging
import time
from typing import Callable

from ..events import ProgressEvent, StageStats

PROGRESS_EVERY_S = 0.1  # progress events per stage are throttled to this period


class Progress:
    """Counters per stage; calls the listener on the scheduler's thread, never concurrently."""

    def __init__(self, order: list[str], on_event: Callable[[ProgressEvent], None] | None, logger: logging.Logger):
        self.order = order
        self.stats: dict[str, StageStats] = {n: StageStats(n) for n in order}
        self.on_event, self.logger = on_event, logger
        self.run_id = 0

    def numbers(self, name: str) -> dict:
        s = self.stats[name]
        now = time.monotonic()
        return {"done": s.done, "total": s.total, "errors": s.failed + s.skipped, "rate": s.rate(now), "eta_s": s.eta(now)}

    def emit(self, ev: ProgressEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(ev)
        except Exception:  # noqa: BLE001 - a listener's bug must not stop the run
            self.logger.exception("progress listener failed")

    def item_error(self, name: str, line: str, video_id: int | None = None, segment_id: int | None = None) -> None:
        self.emit(ProgressEvent("item_error", self.run_id, stage=name, message=line, video_id=video_id,
                                segment_id=segment_id, **self.numbers(name)))

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        for name in self.order:
            s = self.stats[name]
            if s.finished:
                continue
            if force or now - s.last_emit >= PROGRESS_EVERY_S:
                s.last_emit = now
                self.emit(ProgressEvent("stage_progress", self.run_id, stage=name, **self.numbers(name)))

    def stage_finished(self, name: str) -> None:
        s = self.stats[name]
        s.finished = True
        s.finished_at = time.monotonic()
        self.logger.info("stage %s finished: %d ok, %d failed, %d skipped", name, s.ok, s.failed, s.skipped)
        self.emit(ProgressEvent("stage_finished", self.run_id, stage=name, **self.numbers(name)))
