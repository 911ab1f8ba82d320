"""The stage contract shared by the local runner, the Ray runner, the CLI and the GUI.

A stage is a small object that knows nothing of threads, Qt or Ray:

- driver side (has the SQLite store):
    ``pending(db)``      -> ids of items whose work is missing or stale
    ``prepare(db, id)``  -> a JSON-able task dict with every input the work needs
    ``commit(db, task, result)`` -> writes the result rows, in one transaction, plus the
                            stage_state/annotation that marks the item done
- worker side (no store; may run in another process or on another machine):
    ``load()``           -> load models once per worker
    ``process(task)``    -> the result dict (files go under the project cache)

``process`` raises ``StageError`` with a one-line, secret-free message for a bad item; the
runner records it in ``errors`` and goes on. Video-level stages have ``scope = "video"``
and their items are video ids; the emotion stage has ``scope = "segment"``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

STAGE_ORDER = ("separate", "vad", "asr", "segments", "faces", "asd", "emotion")


class StageError(Exception):
    """One item failed; the message is one line naming the item and the fix."""


class ModelMissingError(StageError):
    """Weights are absent and cannot be downloaded; the message says which file goes where."""


class Stage:
    name: str = ""
    scope: str = "video"  # "video" or "segment"
    # Stages whose results this one reads (their cache keys feed this one's key).
    requires: tuple[str, ...] = ()
    # Config sections that change this stage's output (part of the cache key).
    config_sections: tuple[str, ...] = ()
    # Ray resources per actor; the runner may override from config.
    num_gpus: float = 0.0

    def __init__(self, project, device: str = "cpu"):
        self.project = project
        self.cfg = project.config
        self.device = device

    # ---- driver side -------------------------------------------------------------
    def cache_key(self, db, video_id: int) -> str:
        """Hash of this stage's config and its inputs' keys: a change re-runs the stage."""
        from . import store

        parts = [self.name, json.dumps({s: self.cfg.get(s, {}) for s in self.config_sections}, sort_keys=True)]
        sha = db.conn.execute("SELECT sha256 FROM videos WHERE id=?", (video_id,)).fetchone()
        parts.append(sha[0] if sha else "")
        for dep in self.requires:
            st = store.get_stage_state(db, video_id, dep)
            parts.append(st["cache_key"] if st else "")
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def pending(self, db, video_ids: Iterable[int] | None = None) -> list[int]:
        """Video-level default: videos whose stage_state is not done under the current key."""
        from . import store

        ids = video_ids if video_ids is not None else [r[0] for r in db.conn.execute("SELECT id FROM videos ORDER BY id")]
        out = []
        for vid in ids:
            st = store.get_stage_state(db, vid, self.name)
            if st is None or st["status"] != "done" or st["cache_key"] != self.cache_key(db, vid):
                out.append(vid)
        return out

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---- worker side -------------------------------------------------------------
    def load(self) -> None:
        """Load models; called once per worker before the first process()."""

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError
