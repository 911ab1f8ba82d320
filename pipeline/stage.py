"""The stage contract: the one shape every stage has, run by the local and the Ray runner alike.

A stage declares what it needs, loads its models, turns one item into a result, and writes
only its result rows. It knows nothing of threads, event loops, transactions, Qt or Ray.

Declarations (class attributes)::

    name             the stage's name (the registry in ``stages.py`` maps names to classes)
    scope            "video" (items are video ids) or "segment" (items are (segment_id, run_index))
    requires         stages whose results this one reads; their cache keys feed this one's
    config_sections  config sections that change the output (part of the cache key)
    num_gpus         Ray GPUs per actor on GPU clusters (a default, the config may override)
    thread_safe      one instance may serve several worker threads at once
    supports_batch   the stage can also run through a batch driver (the Gemini Batch API);
                     the runner uses it when the driver instance's ``batch`` is set
    video_state      segment scope only: the runner also records one video-level
                     ``stage_state`` (done, ``cache_key(db, video)``, ``video_info``) once
                     none of a video's segments is pending, so stages that require this one
                     (and ``status``) read one state per video

Driver side (the runner's thread; has the SQLite store):

    ``pending(db, video_ids)`` -> items whose work is missing or stale under the current keys
    ``prepare(db, item)``      -> a JSON-able task with every input the work needs
                                  (video scope: include ``cache_key``)
    ``commit(db, task, result)`` -> writes this item's result rows and nothing else, inside
                                  the runner's transaction; for video scope it returns the
                                  ``info`` dict the runner stores in ``stage_state``
    ``run_id``                 the current run (set by the runner) for rows that record it
    ``video_info(db, video_id)`` -> (``video_state`` stages) the info of the video-level state
    ``done_count(db)``         -> items done in the project, in ``pending``'s unit (status);
                                  None: count the done video states

Worker side (no store; maybe another process or machine):

    ``load()``                 models, clients: once per instance, called by the runner
    ``cpu_threads``            set by the runner before ``load()``: the threads this instance's
                               math libraries may use on the CPU (None: their own default)
    ``process(task)``          -> the result dict (synchronous stages), or
    ``async process_async(task)`` -> the result dict (API stages: the executor runs the event
                                  loop and keeps up to ``concurrency()`` items in flight)
    ``concurrency()``          items one instance may work on at once (default 1)
    ``close()`` / ``async aclose()``  release what ``load()`` opened

Failures: raise :class:`StageError` with a one-line, secret-free message naming the item and
the fix (``detail``: extra text such as a raw model answer; ``path``: a file involved;
``stops_stage``: nothing more of this stage can succeed this run). The
runner alone writes ``errors``, ``stage_state``, ``runs`` and run ids, owns transactions,
retries, concurrency and devices; see ``docs/architecture.md``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

# speakers comes after emotion: emotion does not read speaker ids, and between two
# segment-scope stages (faces -> asd -> emotion) a segment streams on alone.
STAGE_ORDER = ("separate", "vad", "asr", "segments", "faces", "asd", "emotion", "speakers")


class StageError(Exception):
    """One item failed; the message is one line naming the item and the fix.

    ``detail`` (e.g. the raw text of an invalid model answer) and ``path`` (the file involved)
    go to the errors row next to the message. ``stops_stage``: the stage cannot go on this run
    (a per-day quota, an unreachable server): the runner records this one line, starts no
    further item of the stage and leaves the rest pending for a later run.
    """

    def __init__(self, message: str, *, detail: str | None = None, path: str | None = None,
                 stops_stage: bool = False):
        super().__init__(message)
        self.detail = detail
        self.path = path
        self.stops_stage = stops_stage


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
    thread_safe: bool = False
    video_state: bool = False  # segment scope: also one stage_state per video (see above)

    run_id: int | None = None  # set by the runner on its driver-side instances
    cpu_threads: int | None = None  # set by the runner on worker instances before load()

    def __init__(self, project, device: str = "cpu"):
        self.project = project
        self.cfg = project.config
        self.device = device

    # ---- driver side -------------------------------------------------------------
    def cache_key(self, db, video_id: int) -> str:
        """Hash of this stage's config and its inputs' keys: a change re-runs the stage."""
        from . import store

        parts = [self.name, self.config_json()]
        sha = db.conn.execute("SELECT sha256 FROM videos WHERE id=?", (video_id,)).fetchone()
        parts.append(sha[0] if sha else "")
        for dep in self.requires:
            st = store.get_stage_state(db, video_id, dep)
            parts.append(st["cache_key"] if st else "")
        return key_of(*parts)

    def config_json(self) -> str:
        """This stage's config sections as canonical JSON (the config part of every key)."""
        return json.dumps({s: self.cfg.get(s, {}) for s in self.config_sections}, sort_keys=True)

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

    def pending_segments(self, db, video_id: int, segment_ids: list[int]) -> list:
        """Segment scope: the pending items of these segments (the runner streams a segment
        that finished the stage before; override when the whole video's pending() is slow)."""
        want = set(segment_ids)
        return [it for it in self.pending(db, [video_id])
                if (it[0] if isinstance(it, (list, tuple)) else it) in want]

    def video_info(self, db, video_id: int) -> dict[str, Any]:
        """The info of the video-level stage_state of a ``video_state`` stage."""
        return {}

    def done_count(self, db) -> int | None:
        """Items done in the project, in the unit of ``pending`` (None: the done video states)."""
        return None

    def prepare(self, db, item_id: int) -> dict[str, Any]:
        raise NotImplementedError

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> dict[str, Any] | None:
        """Write the item's result rows (no transaction, no stage_state); return stage_state info."""
        raise NotImplementedError

    # ---- worker side -------------------------------------------------------------
    def load(self) -> None:
        """Load models; called once per instance by the runner before the first item."""

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # An API stage defines ``async def process_async(self, task)`` instead of ``process``.
    process_async = None

    def concurrency(self) -> int:
        """Items one instance works on at once (async stages fan out this far)."""
        return 1

    def close(self) -> None:
        """Release what load() opened."""


def key_of(*parts: str) -> str:
    """The cache-key hash of some parts (stage keys and per-segment keys alike)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def has_video_state(stage: Stage | type[Stage]) -> bool:
    """Whether the runner keeps one stage_state per video for this stage: every video-scope
    stage, and segment-scope stages that declare ``video_state``."""
    return stage.scope == "video" or bool(stage.video_state)


def is_async(cls: type[Stage]) -> bool:
    """Whether the stage works through ``process_async`` (the executor runs its event loop)."""
    return getattr(cls, "process_async", None) is not None
