"""The `emotion` stage: every kept segment -> one multimodal LLM answer per run index.

Items are ``(segment_id, run_index)`` pairs (``scope = "segment"``). Segments whose status
is in ``[segments] drop_statuses`` are skipped. An item is done when ``annotations`` holds a
row for (segment, backend, model, prompt_sha, label_set, run_index); the UNIQUE index on
those columns plus INSERT OR IGNORE makes ``commit`` idempotent.

Stage contract (pipeline/stage.py): ``async process_async(task)`` on the executor's asyncio
loop, up to ``concurrency()`` ([emotion] concurrency) items at once; the backend paces them
(requests/tokens per minute, adaptive concurrency on rate limits). ``aclose()`` closes the
network sessions. ``commit`` writes only the annotation row (and the segment's clip).
With ``[emotion] batch = true`` (``mikupal run --batch``) the runner drives the Gemini Batch
API through ``batch.BatchDriver`` instead (``supports_batch``); answers are judged and stored
the same way.

Never pay twice: ``prepare`` looks up an existing answer for the same (clip sha, prompt sha,
backend, model, run index) - e.g. the same clip under another segment id after segments were
rebuilt - and the task then carries it; ``process_async`` copies it (cost 0) without a request.

Failures raise ``StageError`` (the runner writes the errors row). A PAID answer that is no
use (invalid after one retry, blocked, cut off at MAX_TOKENS) raises ``StageError`` whose
``detail`` is a JSON record of what was paid: ``{"kind", "answer", "cost_usd", "usage",
"input_tokens", "output_tokens", "batch"}`` (``answer`` is the raw text or response, for a
human). That errors row is the receipt: ``mikupal status`` adds ``$.cost_usd`` of emotion
error rows to the spend, so the real bill is reported; the next run asks again (a useless
answer has nothing to reuse). A valid answer is never requested twice. A per-day quota or an
unreachable server raises ``StageError`` with ``stops_stage = True``: requests in flight
finish, every later item fails at once without a request (same message), and a later run
finishes the rest.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from .. import store
from ..stage import Stage, StageError
from ..taxonomy import TaxonomyError, TAXONOMY_DIR
from .backends.base import Backend, Reply, Request
from .clips import ClipError, ClipSpec, cut_clip, parse_bbox
from .prices import PriceError, load_prices
from .prompt import Prompt, build_prompt
from .ratelimit import StopStage, TransientError
from .redact import scrub

log = logging.getLogger("mikupal.emotion")
BASELINE_MODEL = "baseline-v1"


def stage_error(message: str, detail: str | None = None, path: str | None = None, *, stops_stage: bool = False) -> StageError:
    """StageError(message, detail=, path=, stops_stage=) as the stage contract defines it."""
    return StageError(message, detail=detail, path=path, stops_stage=stops_stage)


def paid_detail(kind: str, answer: str, usage, cost_usd: float | None, *, request: str | None = None) -> str:
    """The errors.detail of a paid but useless answer: what it said and what it cost.

    ``request`` names a Batch API request ("batches/ID/KEY"): a resumed run may hand the same
    answer out again, and the spend counts one receipt per request."""
    return json.dumps({"kind": kind, "cost_usd": cost_usd, "input_tokens": usage.input_tokens,
                       "output_tokens": usage.output_tokens, "usage": usage.to_dict(), "batch": request is not None,
                       "request": request, "answer": answer}, ensure_ascii=False)


def make_backend(cfg: dict, project_root: str | Path | None = None) -> Backend:
    """The configured backend ([emotion] backend); raises StageError when it cannot start."""
    name = cfg["emotion"]["backend"]
    try:
        if name == "gemini":
            from .backends.gemini import GeminiBackend

            return GeminiBackend(cfg, prices=load_prices(project_root))
        if name == "openai":
            from .backends.openai_compat import OpenAICompatBackend

            return OpenAICompatBackend(cfg, prices=load_prices(project_root))
        if name == "baseline":
            from .backends.baseline import BaselineBackend

            return BaselineBackend(cfg)
    except PriceError as e:
        raise StageError(f"emotion backend {name!r} cannot start: {e}") from None
    except Exception as e:  # noqa: BLE001 - e.g. no API key: one line, no secret
        raise StageError(f"emotion backend {name!r} cannot start: {scrub(e)}") from None
    raise StageError(f"unknown emotion backend {name!r}; use gemini, openai or baseline")


class EmotionStage(Stage):
    name = "emotion"
    scope = "segment"
    thread_safe = True  # one instance serves every item in flight on the executor's loop
    supports_batch = True  # the runner may drive it through batch.BatchDriver ([emotion] batch)
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
        self.batch = bool(e["batch"]) and self.backend_name == "gemini"
        self._backend: Backend | None = None
        self._clip_locks: dict[str, asyncio.Lock] = {}
        self._stopped: StageError | None = None

    def _label_set_ref(self, ref: str) -> str:
        """A relative label-set path is looked up in the project folder first."""
        if (TAXONOMY_DIR / f"{ref}.json").exists() or Path(ref).is_absolute():
            return ref
        p = Path(self.project.root) / ref
        return str(p) if p.exists() else ref

    # ---- driver side -------------------------------------------------------------
    def pending(self, db, video_ids: Iterable[int] | None = None) -> list[tuple[int, int]]:
        return self._pending(db, "video_id", video_ids)

    def pending_segments(self, db, video_id: int, segment_ids: list[int]) -> list[tuple[int, int]]:
        # A segment streamed in from asd: look at its own rows, not the whole project's answers.
        return self._pending(db, "id", segment_ids)

    def _pending(self, db, column: str, ids: Iterable[int] | None) -> list[tuple[int, int]]:
        q = "SELECT id FROM segments WHERE status NOT IN (SELECT value FROM json_each(?))"
        params: list[Any] = [json.dumps(self.drop_statuses)]
        if ids is not None:
            q += f" AND {column} IN (SELECT value FROM json_each(?))"
            params.append(json.dumps([int(i) for i in ids]))
        seg_ids = [r[0] for r in db.conn.execute(q + " ORDER BY video_id, start_s, id", params)]
        done_q = ("SELECT segment_id, run_index FROM annotations WHERE backend=? AND model=? AND prompt_sha=?"
                  " AND label_set=?")
        done_params: list[Any] = [self.backend_name, self.model, self.prompt.sha, self.label_set]
        if ids is not None:
            done_q += " AND segment_id IN (SELECT value FROM json_each(?))"
            done_params.append(json.dumps(seg_ids))
        done = set(db.conn.execute(done_q, done_params).fetchall())
        return [(sid, r) for sid in seg_ids for r in range(self.runs) if (sid, r) not in done]

    def done_count(self, db) -> int:
        return db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]

    def clip_spec(self, seg: dict, video: dict) -> ClipSpec:
        c = self.cfg["clips"]
        return ClipSpec(video_path=video["path"], video_sha=video["sha256"], start_s=float(seg["start_s"]),
                        end_s=float(seg["end_s"]), bbox=parse_bbox(seg.get("speaker_bbox_json")),
                        crop=str(c["crop"]), height=int(c["height"]), fps=float(c["fps"]), context_s=float(c["context_s"]),
                        audio_track=str(self.cfg["media"]["audio_track"]))

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
            "prompt_sha": self.prompt.sha,
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
        """Store the answer (inside the runner's transaction); idempotent."""
        a = result["annotation"]
        row = {k: a.get(k) for k in ANNOTATION_FIELDS} | {
            "segment_id": task["segment_id"], "run_id": task.get("run_id") or self.run_id, "created_at": store.now()}
        cols = list(row)
        db.conn.execute(f"INSERT OR IGNORE INTO annotations ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [row[c] for c in cols])
        if result.get("clip_sha"):
            db.conn.execute("UPDATE segments SET clip_sha=?, clip_path=? WHERE id=?",
                            (result["clip_sha"], result.get("clip_path"), task["segment_id"]))

    # ---- worker side -------------------------------------------------------------
    def load(self) -> None:
        if self._backend is None:
            self._backend = make_backend(self.cfg, self.project.root)

    def concurrency(self) -> int:
        return max(1, int(self.cfg["emotion"]["concurrency"]))

    async def aclose(self) -> None:
        """Close the backend's network sessions (safe to call twice)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.aclose()

    def close(self) -> None:
        """Sync variant: drops the backend (sessions are closed by ``aclose`` on the loop)."""
        self._backend = None

    async def _cut(self, spec: ClipSpec):
        lock = self._clip_locks.setdefault(spec.key(), asyncio.Lock())
        async with lock:  # two run indices of one segment share one cut
            return await asyncio.get_running_loop().run_in_executor(
                None, cut_clip, spec, self.project.stage_cache("clips"))

    def clip_for(self, task: dict[str, Any]) -> ClipSpec:
        cs = dict(task["clip_spec"])
        cs["bbox"] = tuple(cs["bbox"]) if cs.get("bbox") else None
        return ClipSpec(**cs)

    async def cut(self, task: dict[str, Any]):
        """The task's clip (cut once per content key); StageError when the source cannot be cut."""
        try:
            return await self._cut(self.clip_for(task))
        except ClipError as e:
            raise StageError(f"{task['item']}: {e}") from None

    def _rel(self, path: str) -> str:
        try:
            return str(Path(path).resolve().relative_to(Path(self.project.root).resolve()))
        except ValueError:
            return path

    @staticmethod
    def reused(task: dict[str, Any]) -> dict[str, Any] | None:
        """The copied answer when the same clip was already answered under this prompt (cost 0)."""
        if not task.get("reuse"):
            return None
        a = dict(task["reuse"])
        a.pop("from_id", None)
        a.update(cost_usd=0.0, latency_s=0.0, run_index=task["run_index"], batch_job=None)
        return {"segment_id": task["segment_id"], "run_index": task["run_index"], "annotation": a,
                "clip_sha": task.get("clip_sha"), "reused": True}

    def result_from(self, task: dict[str, Any], clip, reply: Reply, *, batch_job: str | None = None,
                    request_key: str | None = None) -> dict[str, Any]:
        """The result dict for ``commit``, or StageError for a paid but useless answer."""
        item = task["item"]
        if reply.answer is None:
            req = f"{batch_job}/{request_key}" if batch_job else None
            raise stage_error(f"{item}: {reply.error}",
                              detail=scrub(paid_detail(reply.kind or "invalid", reply.raw, reply.usage, reply.cost_usd,
                                                       request=req)),
                              path=self._rel(clip.path))
        a, u = reply.answer, reply.usage
        return {"segment_id": task["segment_id"], "run_index": task["run_index"], "clip_sha": clip.sha,
                "clip_path": self._rel(clip.path), "retries": reply.retries, "annotation": {
                    "backend": self.backend_name, "model": self.model, "prompt_sha": self.prompt.sha,
                    "run_index": task["run_index"], "label_set": self.label_set, "primary_emotion": a.primary_emotion,
                    "intensities_json": json.dumps(a.emotions), "rationale": a.rationale,
                    "visual_analysis": a.visual_analysis, "audio_analysis": a.audio_analysis,
                    "text_analysis": a.text_analysis, "raw_response": reply.raw, "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens, "cached_tokens": u.cached_tokens, "thought_tokens": u.thoughts,
                    "usage_json": json.dumps(u.to_dict()), "cost_usd": reply.cost_usd,
                    "latency_s": round(reply.latency_s, 3), "clip_sha": clip.sha, "batch_job": batch_job}}

    async def process_async(self, task: dict[str, Any]) -> dict[str, Any]:
        out = self.reused(task)
        if out is not None:
            return out
        if self.batch:  # [emotion] batch = true: only the runner's batch executor may send these
            raise stage_error(f"{task['item']}: [emotion] batch = true, but this executor sends requests one by one; "
                              "run locally (no --ray) for the Batch API, or set emotion.batch=false", stops_stage=True)
        if self._stopped is not None:  # a daily quota or a dead server: no request can succeed now
            raise stage_error(f"{task['item']}: {self._stopped}", stops_stage=True)
        if self._backend is None:
            self.load()
        item = task["item"]
        clip = await self.cut(task)
        req = Request(clip=clip, transcript=task.get("text") or "", prompt=self.prompt,
                      run_index=task["run_index"], seed=int(task["seed"]), item=item)
        try:
            reply: Reply = await self._backend.annotate(req)
        except StopStage as e:
            if self._stopped is None:
                self._stopped = StageError(f"{self.backend_name}: {scrub(e)}; a later run finishes the remaining items")
                log.warning("emotion stage stopped: %s", self._stopped)
            raise stage_error(f"{item}: {self._stopped}", stops_stage=True) from None
        except TransientError as e:
            hint = "; set [emotion] rpm/tpm to your quota tier's limits" if e.throttled else ""
            raise StageError(f"{item}: {self.backend_name} still failing after {self.cfg['emotion']['max_retries']} "
                             f"retries ({scrub(e)}); run again later{hint}") from None
        except StageError:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. HTTP 400/401/403: one secret-free line
            raise StageError(f"{item}: {self.backend_name} request failed: {scrub(_one_line(e))}") from None
        return self.result_from(task, clip, reply)


ANNOTATION_FIELDS = ("backend", "model", "prompt_sha", "run_index", "label_set", "primary_emotion", "intensities_json",
                     "rationale", "visual_analysis", "audio_analysis", "text_analysis", "raw_response", "input_tokens",
                     "output_tokens", "cached_tokens", "thought_tokens", "usage_json", "cost_usd", "latency_s",
                     "clip_sha", "batch_job")


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else s or type(e).__name__
