"""Worker side of a run: one stage instance on one device, and the units that travel to it.

Shared by the local executor and the Ray actors; replies are plain tuples so they cross
process boundaries without pickling exceptions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from ..events import describe_failure
from ..stage import Stage

log = logging.getLogger(__name__)


@dataclass
class Work:
    stage: str
    item: Any  # video id, or (segment_id, run_index) for segment-scope stages
    video_id: int
    task: dict


@dataclass
class Outcome:
    work: Work
    kind: str  # "ok" | "error" | "load_failed" | "dropped"
    result: dict | None = None
    expected: bool = True  # StageError (a bad item) vs. an unexpected exception
    message: str = ""
    detail: str | None = None
    path: str | None = None
    worker: str = ""
    stops_stage: bool = False  # the stage cannot go on this run (StageError.stops_stage)


class StageWorker:
    """One stage instance on one device: loads on its first item, then processes."""

    def __init__(self, factory: Callable[..., Stage], project, device: str, cpu_threads: int | None = None):
        self.factory, self.project, self.device = factory, project, device
        self.cpu_threads = cpu_threads
        self.stage: Stage | None = None
        self.load_error: tuple[str, str | None] | None = None

    def ensure_loaded(self) -> bool:
        if self.stage is not None:
            return True
        if self.load_error is not None:
            return False
        try:
            stage = self.factory(self.project, device=self.device)
            stage.cpu_threads = self.cpu_threads
            stage.load()
        except Exception as e:  # noqa: BLE001 - reported once for the whole stage
            _, msg, detail = describe_failure(e)
            self.load_error = (msg, detail)
            return False
        self.stage = stage
        return True

    def run(self, task: dict) -> tuple:
        """("ok", result) | ("error", expected, message, detail, path) | ("load_failed", message, detail)."""
        if not self.ensure_loaded():
            return ("load_failed", *self.load_error)
        try:
            return ("ok", self.stage.process(task))
        except Exception as e:  # noqa: BLE001 - per-item failure isolation
            return failure_reply(e)

    async def run_async(self, task: dict) -> tuple:
        """The same replies for a stage that works through ``process_async``."""
        if not self.ensure_loaded():
            return ("load_failed", *self.load_error)
        try:
            return ("ok", await self.stage.process_async(task))
        except Exception as e:  # noqa: BLE001 - per-item failure isolation
            return failure_reply(e)

    def close(self) -> None:
        if self.stage is None:
            return
        try:
            self.stage.close()
        except Exception:  # noqa: BLE001 - shutting down; nothing left to report to
            log.debug("closing stage %s failed", self.stage.name, exc_info=True)

    async def aclose(self) -> None:
        aclose = getattr(self.stage, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001
                log.debug("closing stage %s failed", self.stage.name, exc_info=True)
        self.close()


def failure_reply(e: BaseException) -> tuple:
    expected, msg, detail = describe_failure(e)
    return ("error", expected, msg, detail, getattr(e, "path", None), bool(getattr(e, "stops_stage", False)))


def to_outcome(work: Work, reply: tuple, worker: str = "") -> Outcome:
    if reply[0] == "ok":
        return Outcome(work, "ok", result=reply[1], worker=worker)
    if reply[0] == "error":
        return Outcome(work, "error", expected=reply[1], message=reply[2], detail=reply[3],
                       path=reply[4] if len(reply) > 4 else None, stops_stage=len(reply) > 5 and reply[5],
                       worker=worker)
    return Outcome(work, "load_failed", expected=False, message=reply[1], detail=reply[2], worker=worker)
