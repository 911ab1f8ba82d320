"""The `emotion` stage: every kept segment -> one multimodal LLM answer per run index.

Items are ``(segment_id, run_index)`` pairs (``scope = "segment"``). Segments whose status
is in ``[segments] drop_statuses`` are skipped. An item is done when ``annotations`` holds a
row for (segment, backend, model, prompt_sha, label_set, run_index); the UNIQUE index on
those columns plus INSERT OR IGNORE makes ``commit`` idempotent.

Concurrency (for the runner): ``process(task)`` is thread-safe. Every call is handed to one
private asyncio loop owned by the stage, where a semaphore (``[emotion] concurrency``) and
one requests/tokens-per-minute limiter pace all requests, so the runner may call
``process`` from as many threads as it likes (``[emotion] concurrency`` threads keep the
pipe full) and the limits still hold. ``process_many(tasks)`` does the same for a batch
from one thread and returns results (or exceptions) in order. Call ``close()`` when done.

Never pay twice: ``prepare`` looks up an existing answer for the same (clip sha, prompt sha,
backend, model, run index) - e.g. the same clip under another segment id after segments were
rebuilt - and the task then carries it; ``process`` copies it (cost 0) without a request.

Failures: a model answer that stays invalid after one retry, or a blocked one, comes back as
``{"error": {...}}`` and ``commit`` stores an errors row (stage 'emotion', detail = the raw
text); the next run retries it. Network give-ups and unreadable sources raise StageError.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Iterable

from .. import store
from ..stage import Stage, StageError
from ..taxonomy import TaxonomyError, TAXONOMY_DIR
from .backends.base import Backend, Reply, Request
from .clips import ClipError, ClipSpec, cut_clip, parse_bbox
from .prompt import Prompt, build_prompt
from .ratelimit import TransientError
from .redact import scrub

log = logging.getLogger("mikupal.emotion")
BASELINE_MODEL = "baseline-v1"


def make_backend(cfg: dict) -> Backend:
    """The configured backend ([emotion] backend); raises StageError when it cannot start."""
    name = cfg["emotion"]["backend"]
    try:
        if name == "gemini":
            from .backends.gemini import GeminiBackend

            return GeminiBackend(cfg)
        if name == "openai":
            from .backends.openai_compat import OpenAICompatBackend

            return OpenAICompatBackend(cfg)
        if name == "baseline":
            from .backends.baseline import BaselineBackend

            return BaselineBackend(cfg)
    except Exception as e:  # noqa: BLE001 - e.g. no API key: one line, no secret
        raise StageError(f"emotion backend {name!r} cannot start: {scrub(e)}") from None
    raise StageError(f"unknown emotion backend {name!r}; use gemini, openai or baseline")


class _LoopThread:
    """One asyncio loop in a daemon thread; coroutines are submitted from any thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="emotion-loop", daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self):
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        self.loop.close()


class EmotionStage(Stage):
    name = "emotion"
    scope = "segment"
    thread_safe = True  # one instance serves all runner threads (see the module docstring)
    requires = ("segments", "asd")
    config_sections = ("clips", "emotion")

    def __init__(self, project, device: str = "cpu"):
        super().__init__(project, device)
        e = self.cfg["emotion"]
        self.backend_name = str(e["backend"])
        self.model = BASELINE_MODEL if self.backend_name == "baseline" else str(e["model"])
        try:
            self.prompt: Prompt = build_prompt(self._label_set_ref(str(e["label_set"])), str(e["language"]))
        except TaxonomyError as err:
            raise StageError(f"[emotion] label_set: {err}") from None
        self.label_set = self.prompt.label_set.name
        self.runs = max(1, int(e["runs"]))
        self.seed = int(e["seed"])
        self.drop_statuses = list(self.cfg["segments"]["drop_statuses"])
        self.run_id: int | None = None  # the runner may set the current runs.id
        self._backend: Backend | None = None
        self._loop: _LoopThread | None = None
        self._sem: asyncio.Semaphore | None = None
        self._clip_locks: dict[str, asyncio.Lock] = {}
        self._load_lock = threading.Lock()

    def _label_set_ref(self, ref: str) -> str:
        """A relative label-set path is looked up in the project folder first."""
        if (TAXONOMY_DIR / f"{ref}.json").exists() or Path(ref).is_absolute():
            return ref
        p = Path(self.project.root) / ref
        return str(p) if p.exists() else ref

    # ---- driver side -------------------------------------------------------------
    def pending(self, db, video_ids: Iterable[int] | None = None) -> list[tuple[int, int]]:
        q = "SELECT id FROM segments WHERE status NOT IN (SELECT value FROM json_each(?))"
        params: list[Any] = [json.dumps(self.drop_statuses)]
        if video_ids is not None:
            q += " AND video_id IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(video_ids)))
        seg_ids = [r[0] for r in db.conn.execute(q + " ORDER BY video_id, start_s, id", params)]
        done = set(db.conn.execute(
            "SELECT segment_id, run_index FROM annotations WHERE backend=? AND model=? AND prompt_sha=? AND label_set=?",
            (self.backend_name, self.model, self.prompt.sha, self.label_set)).fetchall())
        return [(sid, r) for sid in seg_ids for r in range(self.runs) if (sid, r) not in done]

    def clip_spec(self, seg: dict, video: dict) -> ClipSpec:
        c = self.cfg["clips"]
        return ClipSpec(video_path=video["path"], video_sha=video["sha256"], start_s=float(seg["start_s"]),
                        end_s=float(seg["end_s"]), bbox=parse_bbox(seg.get("speaker_bbox_json")),
                        crop=str(c["crop"]), height=int(c["height"]), fps=float(c["fps"]), context_s=float(c["context_s"]))

    def prepare(self, db, item) -> dict[str, Any]:
        sid, run_index = int(item[0]), int(item[1])
        segs = store.rows(db, "SELECT * FROM segments WHERE id=?", (sid,))
        if not segs:
            raise StageError(f"segment {sid}: no longer in the database; run the segments stage again")
        seg = segs[0]
        video = store.rows(db, "SELECT id, path, sha256, has_video FROM videos WHERE id=?", (seg["video_id"],))[0]
        spec = self.clip_spec(seg, video)
        task = {
            "segment_id": sid, "run_index": run_index, "video_id": video["id"], "run_id": self._current_run_id(db),
            "clip_spec": spec.__dict__ | {"bbox": list(spec.bbox) if spec.bbox else None},
            "text": seg.get("text") or "", "seed": self.seed + run_index,
            "item": f"segment {sid} run {run_index} (video {video['id']}, {spec.start_s:.2f}-{spec.end_s:.2f} s)",
            "reuse": None,
        }
        clip_sha = self._indexed_clip_sha(spec)
        if clip_sha:
            prev = store.rows(db, "SELECT * FROM annotations WHERE clip_sha=? AND prompt_sha=? AND backend=? AND model=?"
                                  " AND label_set=? AND run_index=? ORDER BY id LIMIT 1",
                              (clip_sha, self.prompt.sha, self.backend_name, self.model, self.label_set, run_index))
            if prev:
                task["reuse"] = {k: prev[0][k] for k in ANNOTATION_FIELDS if k in prev[0]} | {"from_id": prev[0]["id"]}
                task["clip_sha"] = clip_sha
        return task

    def _current_run_id(self, db) -> int | None:
        """The runner may set ``run_id``; otherwise the run this process has open, if any."""
        if self.run_id is None:
            try:
                row = db.conn.execute("SELECT id FROM runs WHERE status='running' AND pid=? ORDER BY id DESC LIMIT 1",
                                      (os.getpid(),)).fetchone()
            except Exception:  # noqa: BLE001 - an old schema without runs.pid
                row = None
            self.run_id = int(row[0]) if row else None
        return self.run_id

    def _indexed_clip_sha(self, spec: ClipSpec) -> str | None:
        f = self.project.stage_cache("clips") / "index" / f"{spec.key()}.json"
        try:
            return json.loads(f.read_text())["sha"]
        except (OSError, ValueError, KeyError):
            return None

    def commit(self, db, task: dict[str, Any], result: dict[str, Any]) -> None:
        if db.conn.in_transaction:  # the runner commits each item inside its own transaction
            self._write(db, task, result)
        else:
            with store.transaction(db):
                self._write(db, task, result)

    def _write(self, db, task: dict[str, Any], result: dict[str, Any]) -> None:
        run_id = task.get("run_id") or self.run_id
        conn = db.conn
        if result.get("error"):
            err = result["error"]
            store.record_error(db, "emotion", scrub(err["message"]), run_id=run_id, video_id=task["video_id"],
                               segment_id=task["segment_id"], detail=scrub(err.get("detail")), path=result.get("clip_path"))
            return
        a = result["annotation"]
        row = {k: a.get(k) for k in ANNOTATION_FIELDS} | {
            "segment_id": task["segment_id"], "run_id": run_id, "created_at": store.now()}
        cols = list(row)
        conn.execute(f"INSERT OR IGNORE INTO annotations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [row[c] for c in cols])
        if result.get("clip_sha"):
            conn.execute("UPDATE segments SET clip_sha=?, clip_path=? WHERE id=?",
                         (result["clip_sha"], result.get("clip_path"), task["segment_id"]))

    # ---- worker side -------------------------------------------------------------
    def load(self) -> None:
        with self._load_lock:
            if self._loop is not None:
                return
            self._backend = make_backend(self.cfg)
            self._loop = _LoopThread()
            self._sem = asyncio.Semaphore(max(1, int(self.cfg["emotion"]["concurrency"])))
            atexit.register(self.close)  # close network sessions even if the caller never does

    def close(self) -> None:
        """Close network sessions and stop the stage's loop (safe to call twice)."""
        with self._load_lock:
            if self._loop is None:
                return
            try:
                self._loop.run(self._backend.aclose())
            finally:
                self._loop.stop()
                self._loop = None
                atexit.unregister(self.close)

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        """Thread-safe: runs the item on the stage's loop and blocks until its answer."""
        if self._loop is None:
            self.load()
        return self._loop.run(self._process_async(task))

    def process_many(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any] | BaseException]:
        """All tasks concurrently (bounded by [emotion] concurrency); results in input order."""
        if self._loop is None:
            self.load()

        async def batch():
            return await asyncio.gather(*(self._process_async(t) for t in tasks), return_exceptions=True)

        return self._loop.run(batch())

    async def _cut(self, spec: ClipSpec):
        lock = self._clip_locks.setdefault(spec.key(), asyncio.Lock())
        async with lock:  # two run indices of one segment share one cut
            return await asyncio.get_running_loop().run_in_executor(
                None, cut_clip, spec, self.project.stage_cache("clips"))

    def _rel(self, path: str) -> str:
        try:
            return str(Path(path).resolve().relative_to(Path(self.project.root).resolve()))
        except ValueError:
            return path

    async def _process_async(self, task: dict[str, Any]) -> dict[str, Any]:
        item = task["item"]
        base = {"segment_id": task["segment_id"], "run_index": task["run_index"]}
        if task.get("reuse"):
            a = dict(task["reuse"])
            a.pop("from_id", None)
            a.update(cost_usd=0.0, latency_s=0.0, run_index=task["run_index"])
            return base | {"annotation": a, "clip_sha": task.get("clip_sha"), "reused": True}
        cs = dict(task["clip_spec"])
        cs["bbox"] = tuple(cs["bbox"]) if cs.get("bbox") else None
        spec = ClipSpec(**cs)
        try:
            clip = await self._cut(spec)
        except ClipError as e:
            raise StageError(f"{item}: {e}") from None
        req = Request(clip=clip, transcript=task.get("text") or "", prompt=self.prompt,
                      run_index=task["run_index"], seed=int(task["seed"]), item=item)
        try:
            async with self._sem:
                reply: Reply = await self._backend.annotate(req)
        except TransientError as e:
            raise StageError(f"{item}: {self.backend_name} still failing after {self.cfg['emotion']['max_retries']} "
                             f"retries ({scrub(e)}); run again later or lower [emotion] concurrency/rpm") from None
        except StageError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. HTTP 400/401/403: one secret-free line
            raise StageError(f"{item}: {self.backend_name} request failed: {scrub(_one_line(e))}") from None
        out = base | {"clip_sha": clip.sha, "clip_path": self._rel(clip.path), "tokens": [reply.input_tokens, reply.output_tokens],
                      "cost_usd": reply.cost_usd, "retries": reply.retries}
        if reply.answer is None:
            return out | {"error": {"message": f"{item}: {reply.error}", "detail": reply.raw}}
        a = reply.answer
        return out | {"annotation": {
            "backend": self.backend_name, "model": self.model, "prompt_sha": self.prompt.sha,
            "run_index": task["run_index"], "label_set": self.label_set, "primary_emotion": a.primary_emotion,
            "intensities_json": json.dumps(a.emotions), "rationale": a.rationale, "visual_analysis": a.visual_analysis,
            "audio_analysis": a.audio_analysis, "text_analysis": a.text_analysis, "raw_response": reply.raw,
            "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens, "cost_usd": reply.cost_usd,
            "latency_s": round(reply.latency_s, 3), "clip_sha": clip.sha}}


ANNOTATION_FIELDS = ("backend", "model", "prompt_sha", "run_index", "label_set", "primary_emotion", "intensities_json",
                     "rationale", "visual_analysis", "audio_analysis", "text_analysis", "raw_response", "input_tokens",
                     "output_tokens", "cost_usd", "latency_s", "clip_sha")


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else s or type(e).__name__
