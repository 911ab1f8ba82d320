"""The Gemini Batch API for the emotion stage (half price): a DRIVER-side component.

Batch is an executor capability: the runner (``pipeline/runner/batch.py``) drives it for a
stage with ``supports_batch`` when ``[emotion] batch = true`` (``mikupal run --batch``). It
runs on the thread that owns the store (it records jobs in project.db) and on an event loop
the executor owns. The interface the runner calls::

    drv = BatchDriver(stage, db)        # stage: an EmotionStage instance (load() is called here)
    await drv.submit(tasks)             # tasks from stage.prepare(); returns how many were sent
    while drv.outstanding():            # requests recorded in live jobs + outcomes not yet taken
        for task, outcome in await drv.poll():
            # outcome is a result dict  -> stage.commit(db, task, outcome) in the runner's transaction
            #         or a StageError   -> the runner's errors row (detail, path), like process_async's
        await asyncio.sleep(drv.poll_interval())   # poll() itself asks the service at most every batch_poll_s
    await drv.aclose()

``run_batch(stage, db, tasks, on_outcome)`` is that loop, for callers without a scheduler.

Never pay twice:
- A job is recorded (``batch_jobs`` state ``submitting`` with a unique ``display_name``, and one
  ``batch_requests`` row per request) BEFORE it is sent; the service's name is stored as soon
  as it answers. A run killed in between finds the job again by listing the service's jobs
  for that display name (and sends it only if the service never got it).
- ``submit`` skips items already in a live job; a later run resumes polling those jobs.
- Answers of a finished job are handed out until the job is marked ``collected`` (after the
  caller took them): a run killed in between hands them out again and ``commit`` (INSERT OR
  IGNORE on the answer's unique key) stores each once.
- Clips go through the Files API once and are reused (``uploaded_files``) until they expire.

Requests are the interactive ones (``backends.gemini.generate_config``), inline in the job up
to ~19 MB, else as an uploaded JSONL file (``{"key", "request"}`` per line). Answers are judged
by the same ``judge`` as interactive ones: an invalid answer is asked again once with a new
seed; a request that failed inside the job (5xx, 429, the job FAILED or EXPIRED) is sent
again in a new job up to ``[emotion] max_retries`` times. Cost is at the batch rate.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from .. import store
from ..stage import StageError
from .backends.base import Reply
from .prices import Usage
from .ratelimit import RETRY_STATUS, StopStage
from .redact import scrub

log = logging.getLogger("mikupal.emotion")

INLINE_MAX_BYTES = 19_000_000  # the service takes inline requests up to 20 MB
MAX_REQUESTS_PER_JOB = 5000
FILE_TTL_S = 47 * 3600  # the Files API keeps uploads 48 h
FILE_MARGIN_S = 3 * 3600  # a clip expiring sooner is uploaded again (a job may wait hours)
LIVE = ("submitting", "pending", "running")
FINAL_OK = "succeeded"
STATE = {"JOB_STATE_PENDING": "pending", "JOB_STATE_QUEUED": "pending", "JOB_STATE_RUNNING": "running",
         "JOB_STATE_SUCCEEDED": "succeeded", "JOB_STATE_FAILED": "failed", "JOB_STATE_CANCELLED": "cancelled",
         "JOB_STATE_CANCELLING": "running", "JOB_STATE_EXPIRED": "expired", "JOB_STATE_PAUSED": "pending",
         "JOB_STATE_PARTIALLY_SUCCEEDED": "succeeded"}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _state(job) -> str:
    s = getattr(job, "state", None)
    s = str(getattr(s, "value", s) or "")
    return STATE.get(s, s.lower().removeprefix("job_state_") or "pending")


def _key(task: dict, attempt: int) -> str:
    return f"s{task['segment_id']}-r{task['run_index']}-a{attempt}"


class BatchDriver:
    def __init__(self, stage, db, *, inline_max_bytes: int = INLINE_MAX_BYTES):
        if stage.backend_name != "gemini":
            raise StageError(f"[emotion] batch = true needs the gemini backend (not {stage.backend_name}); "
                             "set emotion.batch=false")
        stage.load()
        self.stage, self.db = stage, db
        self.backend = stage._backend
        self.client = self.backend.client
        e = stage.cfg["emotion"]
        self.poll_s = max(0.05, float(e["batch_poll_s"]))
        self.max_retries = int(e["max_retries"])
        self.inline_max_bytes = int(inline_max_bytes)
        self._ready: list[tuple[dict, Any]] = []
        self._current: dict[tuple[int, int], dict] = {}  # this run's fresh task per item
        self._next_poll = 0.0
        self._stopped: StageError | None = None
        self._upload_locks: dict[str, asyncio.Lock] = {}
        self._handed: list[tuple[int, list[tuple[str, str]]]] = []  # (job id, [(key, state)]) handed out, not yet marked
        self.submitted_jobs = 0

    # ---- the runner's interface -------------------------------------------------------
    def poll_interval(self) -> float:
        return min(self.poll_s, 1.0)

    def outstanding(self) -> int:
        return len(self._ready) + len(self._live_requests())

    async def submit(self, tasks: list[dict]) -> int:
        live = {(r["segment_id"], r["run_index"]) for r in self._live_requests()}
        fresh = []
        for t in tasks:
            k = (int(t["segment_id"]), int(t["run_index"]))
            self._current[k] = t
            reused = self.stage.reused(t)
            if reused is not None:
                self._ready.append((t, reused))
            elif self._stopped is not None:
                self._ready.append((t, self._stop_error(t)))
            elif k not in live:  # an item already in a recorded job is polled, never sent again
                fresh.append(dict(t, attempt=0, seed_shift=0, paid_usage=None))
        if fresh:
            await self._send_new(fresh)
        return len(fresh)

    async def poll(self, force: bool = False) -> list[tuple[dict, Any]]:
        """Outcomes ready now; asks the service about live jobs at most every batch_poll_s."""
        self._mark_handed_out()
        if force or time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_s
            retry: list[dict] = []
            for job in store.rows(self.db, "SELECT * FROM batch_jobs WHERE stage=? AND model=? AND state != 'collected'"
                                           " ORDER BY id", (self.stage.name, self.stage.model)):
                try:
                    retry += await self._poll_job(job)
                except StopStage as e:
                    self._stop(e)
                except Exception as e:  # noqa: BLE001 - the service is unreachable now: try again next poll
                    log.warning("batch job %s: poll failed (%s); trying again in %.0f s", job["name"] or job["display_name"],
                                scrub(str(e)), self.poll_s)
            if retry:
                await self._send_new(retry)
        out, self._ready = self._ready, []
        return out

    async def aclose(self) -> None:
        self._mark_handed_out()
        await self.stage.aclose()

    # ---- bookkeeping ----------------------------------------------------------------
    def _write(self, sql: str, params=()) -> int:
        with store.transaction(self.db) as conn:
            return conn.execute(sql, params).lastrowid

    def _live_requests(self) -> list[dict]:
        return store.rows(self.db, "SELECT r.segment_id, r.run_index FROM batch_requests r JOIN batch_jobs j"
                                   " ON j.id = r.job_id WHERE j.stage=? AND j.model=? AND j.state != 'collected'"
                                   " AND r.state = 'pending' AND json_extract(r.task_json, '$.prompt_sha') IS ?",
                          (self.stage.name, self.stage.model, self.stage.prompt.sha))

    def _mark_handed_out(self) -> None:
        """Outcomes returned by the last poll() were taken (committed or recorded) by the caller."""
        pending = self._handed
        if not pending:
            return
        with store.transaction(self.db) as conn:
            for job_id, states in pending:
                for key, state in states:
                    conn.execute("UPDATE batch_requests SET state=? WHERE job_id=? AND key=?", (state, job_id, key))
                conn.execute("UPDATE batch_jobs SET state='collected', updated_at=? WHERE id=?", (store.now(), job_id))
        self._handed = []

    def _stop(self, e: StopStage) -> None:
        if self._stopped is None:
            self._stopped = StageError(f"gemini batch: {scrub(e)}; a later run finishes the remaining items")

    def _stop_error(self, task: dict) -> StageError:
        return StageError(f"{task['item']}: {self._stopped}", stops_stage=True)

    # ---- sending --------------------------------------------------------------------
    async def _uploaded(self, clip) -> tuple[str, str]:
        """(uri, mime type) of the clip in the Files API, uploading it at most once per 47 h."""
        async with self._upload_locks.setdefault(clip.sha, asyncio.Lock()):  # run indices share a clip
            return await self._upload_once(clip)

    async def _upload_once(self, clip) -> tuple[str, str]:
        row = self.db.conn.execute("SELECT uri, mime_type FROM uploaded_files WHERE sha=? AND expires_at > ?",
                                   (clip.sha, _iso(time.time() + FILE_MARGIN_S))).fetchone()
        if row:
            return row[0], row[1]
        f = await self.backend.upload(clip.path, clip.mime_type, f"clip {clip.sha[:12]}")
        self._write("INSERT OR REPLACE INTO uploaded_files (sha, name, uri, mime_type, size_bytes, uploaded_at, expires_at)"
                    " VALUES (?,?,?,?,?,?,?)", (clip.sha, f.name, f.uri, f.mime_type or clip.mime_type, clip.size_bytes,
                                                store.now(), _iso(time.time() + FILE_TTL_S)))
        return f.uri, f.mime_type or clip.mime_type

    async def _request(self, task: dict, key: str):
        from google.genai import types

        from .backends.gemini import generate_config

        clip = await self.stage.cut(task)
        uri, mime = await self._uploaded(clip)
        contents = self.backend.contents(types.Part.from_uri(file_uri=uri, mime_type=mime), self.stage.prompt,
                                         task.get("text") or "")
        cfg = generate_config(self.stage.cfg, self.stage.prompt, int(task["seed"]) + int(task.get("seed_shift") or 0))
        return types.InlinedRequest(model=self.backend.model, contents=contents, config=cfg, metadata={"key": key})

    def _rest(self, req) -> dict:
        """The request as the REST body (what the SDK itself sends inline) for a JSONL line."""
        from google.genai import _common, batches

        d = batches._InlinedRequest_to_mldev(self.client._api_client, req)
        return _common.encode_unserializable_types(_common.convert_to_dict(d))

    async def _send_new(self, tasks: list[dict]) -> None:
        """Record one or more jobs for these tasks, then send them."""
        async def build(t: dict):
            key = _key(t, int(t["attempt"]))
            try:
                return t, key, await self._request(t, key)
            except StageError as e:
                self._ready.append((t, e))
            except StopStage as e:
                self._stop(e)
                self._ready.append((t, self._stop_error(t)))
            except Exception as e:  # noqa: BLE001 - an upload that kept failing: this item only
                self._ready.append((t, StageError(f"{t['item']}: uploading the clip failed: {scrub(str(e))[:300]}")))
            return None

        # Clips are cut and uploaded concurrently (the backend's gate keeps [emotion] concurrency).
        built = [b for b in await asyncio.gather(*(build(t) for t in tasks)) if b is not None]
        for i in range(0, len(built), MAX_REQUESTS_PER_JOB):
            await self._create(built[i:i + MAX_REQUESTS_PER_JOB])

    async def _create(self, built: list[tuple[dict, str, Any]]) -> None:
        lines = [json.dumps({"key": key, "request": self._rest(req)["request"]}) for _, key, req in built]
        mode = "inline" if sum(len(x) for x in lines) <= self.inline_max_bytes else "file"
        token = f"mikupal-{self.stage.name}-{uuid.uuid4().hex[:16]}"
        now = store.now()
        with store.transaction(self.db) as conn:  # recorded BEFORE it is sent
            job_id = conn.execute(
                "INSERT INTO batch_jobs (stage, model, display_name, state, mode, n_requests, run_id, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)", (self.stage.name, self.stage.model, token, "submitting", mode, len(built),
                                                self.stage.run_id, now, now)).lastrowid
            for t, key, _ in built:
                conn.execute("INSERT INTO batch_requests (job_id, key, segment_id, run_index, attempt, task_json, state)"
                             " VALUES (?,?,?,?,?,?,'pending')", (job_id, key, t["segment_id"], t["run_index"],
                                                                  int(t["attempt"]), json.dumps(t)))
        await self._send(job_id, token, mode, [req for _, _, req in built], lines)

    async def _send(self, job_id: int, token: str, mode: str, reqs: list, lines: list[str]) -> None:
        if mode == "file":
            folder = self.stage.project.stage_cache("emotion") / "batches"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{token}.jsonl"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            f = await self.backend.upload(str(path), "application/jsonl", f"batch {token}")
            self._write("UPDATE batch_jobs SET input_file=?, updated_at=? WHERE id=?", (f.name, store.now(), job_id))
            src: Any = f.name
        else:
            src = reqs
        job = await self.backend.call(
            lambda: self.client.aio.batches.create(model=self.backend.model, src=src, config={"display_name": token}),
            f"batch {token}: create")
        self.submitted_jobs += 1
        self._write("UPDATE batch_jobs SET name=?, state=?, updated_at=? WHERE id=?",
                    (job.name, _state(job), store.now(), job_id))
        log.info("batch job %s (%s, %d requests) submitted as %s", token, mode, len(lines), job.name)

    async def _find_by_display_name(self, token: str):
        pager = await self.backend.call(lambda: self.client.aio.batches.list(config={"page_size": 100}),
                                        "batch jobs: list")
        async for j in pager:
            if getattr(j, "display_name", None) == token:
                return j
        return None

    async def _resume_submitting(self, job: dict) -> None:
        """A run died while sending this job: adopt it if the service has it, else send it now."""
        found = await self._find_by_display_name(job["display_name"])
        if found is not None:
            self._write("UPDATE batch_jobs SET name=?, state=?, updated_at=? WHERE id=?",
                        (found.name, _state(found), store.now(), job["id"]))
            return
        rows = store.rows(self.db, "SELECT key, task_json FROM batch_requests WHERE job_id=? ORDER BY rowid", (job["id"],))
        reqs = [await self._request(json.loads(r["task_json"]), r["key"]) for r in rows]
        lines = [json.dumps({"key": r["key"], "request": self._rest(q)["request"]}) for r, q in zip(rows, reqs)]
        if job["mode"] == "file" and job["input_file"]:
            job_ = await self.backend.call(lambda: self.client.aio.batches.create(
                model=self.backend.model, src=job["input_file"], config={"display_name": job["display_name"]}),
                f"batch {job['display_name']}: create")
            self.submitted_jobs += 1
            self._write("UPDATE batch_jobs SET name=?, state=?, updated_at=? WHERE id=?",
                        (job_.name, _state(job_), store.now(), job["id"]))
        else:
            await self._send(job["id"], job["display_name"], job["mode"], reqs, lines)

    # ---- collecting -----------------------------------------------------------------
    async def _poll_job(self, job: dict) -> list[dict]:
        if job["state"] == "submitting":
            await self._resume_submitting(job)
            return []
        bj = await self.backend.call(lambda: self.client.aio.batches.get(name=job["name"]), f"batch {job['name']}: status")
        state = _state(bj)
        if state != job["state"]:
            self._write("UPDATE batch_jobs SET state=?, updated_at=? WHERE id=?", (state, store.now(), job["id"]))
        if state in LIVE:
            return []
        rows = store.rows(self.db, "SELECT * FROM batch_requests WHERE job_id=? AND state='pending' ORDER BY rowid",
                          (job["id"],))
        answers: dict[str, tuple[Any, Any]] = {}  # key -> (response, error)
        if state == FINAL_OK:
            answers = await self._answers(job, bj)
        retry, states = [], []
        for r in rows:
            task = json.loads(r["task_json"])
            k = (int(task["segment_id"]), int(task["run_index"]))
            if k in self._current:  # this run's view of the item (its run id)
                task["run_id"] = self._current[k].get("run_id")
            if task.get("prompt_sha") != self.stage.prompt.sha:  # asked under another prompt/label set
                log.warning("%s: batch answer for another prompt (%s); not stored under this one", task["item"],
                            task.get("prompt_sha"))
                states.append((r["key"], "stale"))
                continue
            resp, err = answers.get(r["key"], (None, None))
            if state != FINAL_OK:
                err = {"code": 503, "message": f"the batch job ended {state.upper()}"}
            elif resp is None and err is None:
                err = {"code": 500, "message": "no answer for this request in the job's output"}
            outcome = await self._outcome(task, job["name"], resp, err)
            if isinstance(outcome, dict) and "retry" in outcome:
                retry.append(outcome["retry"])
                states.append((r["key"], "retry"))
            else:
                self._ready.append((task, outcome))
                states.append((r["key"], "failed" if isinstance(outcome, StageError) else "answered"))
        self._handed.append((job["id"], states))
        return retry

    async def _answers(self, job: dict, bj) -> dict[str, tuple[Any, Any]]:
        from google.genai import types

        out: dict[str, tuple[Any, Any]] = {}
        dest = getattr(bj, "dest", None)
        if dest is not None and getattr(dest, "file_name", None):
            self._write("UPDATE batch_jobs SET output_file=? WHERE id=?", (dest.file_name, job["id"]))
            data = await self.backend.call(lambda: self.client.aio.files.download(file=dest.file_name),
                                           f"batch {job['name']}: results")
            for line in (data.decode("utf-8") if isinstance(data, bytes) else str(data)).splitlines():
                if not line.strip():
                    continue
                d = json.loads(line)
                resp = types.GenerateContentResponse.model_validate(d["response"]) if d.get("response") else None
                out[str(d.get("key"))] = (resp, d.get("error"))
            return out
        for i, ir in enumerate(getattr(dest, "inlined_responses", None) or []):
            key = (ir.metadata or {}).get("key")
            err = ir.error.model_dump(exclude_none=True) if getattr(ir, "error", None) is not None else None
            out[str(key)] = (ir.response, err)
        return out

    async def _outcome(self, task: dict, job_name: str, resp, err) -> Any:
        """A result dict, a StageError, or {"retry": next task} for one request of a finished job."""
        attempt = int(task.get("attempt") or 0)
        if err is not None:
            code = err.get("code") if isinstance(err, dict) else None
            msg = scrub(str(err.get("message") if isinstance(err, dict) else err))[:300]
            if code in (400, 403, 404) and "file" in msg.lower() and not task.get("reupload"):
                # The service lost the uploaded clip (expired early, another key/project): upload it again.
                clip = await self.stage.cut(task)
                self._write("DELETE FROM uploaded_files WHERE sha=?", (clip.sha,))
                return {"retry": dict(task, attempt=attempt + 1, reupload=True)}
            if (code is None or int(code) in RETRY_STATUS) and attempt < self.max_retries:
                log.info("%s: batch request failed (%s %s); sending it again", task["item"], code, msg)
                return {"retry": dict(task, attempt=attempt + 1)}
            return StageError(f"{task['item']}: gemini batch request failed"
                              f"{' after ' + str(attempt) + ' retries' if attempt else ''} ({code}: {msg}); run again later")
        j = self.backend.judge(resp, self.stage.prompt.label_set)
        usage = Usage.from_dict(task.get("paid_usage")) + j.usage if task.get("paid_usage") else j.usage
        if j.kind == "invalid" and not task.get("seed_shift"):
            from .backends.gemini import INVALID_RETRY_SEED_SHIFT

            log.info("%s: invalid batch answer (%s); asking once more", task["item"], j.reason)
            return {"retry": dict(task, attempt=attempt + 1, seed_shift=INVALID_RETRY_SEED_SHIFT,
                                  paid_usage=usage.to_dict())}
        why = f"invalid answer after one retry: {j.reason}" if j.kind == "invalid" else j.reason
        reply = Reply(j.answer, j.raw if j.answer is not None or j.kind != "invalid" else (j.text or j.raw), usage,
                      self.backend.cost(usage, batch=True), 0.0, error=why or None, kind=j.kind)
        clip = await self.stage.cut(task)
        try:
            return self.stage.result_from(task, clip, reply, batch_job=job_name,
                                          request_key=_key(task, int(task.get("attempt") or 0)))
        except StageError as e:
            return e


async def run_batch(stage, db, tasks: list[dict], on_outcome: Callable[[dict, Any], None],
                    *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, driver: BatchDriver | None = None) -> BatchDriver:
    """The runner's loop in one call: submit, then poll until every request is answered."""
    drv = driver or BatchDriver(stage, db)
    try:
        await drv.submit(tasks)
        while True:
            for task, outcome in await drv.poll():
                on_outcome(task, outcome)
            if not drv.outstanding():
                break
            await sleep(drv.poll_interval())
        drv._mark_handed_out()
    finally:
        await drv.aclose()
    return drv
