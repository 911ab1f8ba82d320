"""A local HTTP server that speaks the Gemini REST protocol (v1), for tests and the benchmark.

It implements what google-genai 3.x sends (FACTS.md): ``POST /v1/models/{model}:generateContent``,
the Files API (``POST /upload/v1/files`` resumable start / upload / finalize,
``GET /v1/files/{id}`` polling PROCESSING -> ACTIVE, ``DELETE /v1/files/{id}``,
``GET /v1/files/{id}:download?alt=media``) and the Batch API
(``POST /v1/models/{model}:batchGenerateContent`` with inline requests or an uploaded JSONL
``fileName``; ``GET /v1/batches/{id}`` and ``GET /v1/batches`` answer the operation with
``metadata.state`` BATCH_STATE_PENDING -> RUNNING -> SUCCEEDED (or ``batch_final``) and
``metadata.output`` inlinedResponses or a responsesFile). Request keys are read in camelCase
or snake_case (the SDK mixes them).

Behaviour is scripted: push ``Reply`` objects onto ``server.script`` (served in order to
generateContent calls, and to the requests of a batch when it completes: a non-200 reply
becomes that request's ``error``); when the script is empty a valid annotation is built from
the request's response schema. ``latency_s`` delays every answer. Service rules:
``daily_quota = N`` answers 429 with a QuotaFailure ``...PerDay...`` body after N answers;
``rate_limit_body(quota, s)`` builds a 429 with RetryInfo and QuotaFailure (no Retry-After
header, like the service); ``thoughts``/``cached`` add thoughtsTokenCount and
cachedContentTokenCount to every usageMetadata.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict -> JSON; str -> sent as is; None -> a valid answer
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    text: str | None = None  # a 200 answer whose candidate text is exactly this
    finish: str = "STOP"  # the candidate's finishReason (e.g. MAX_TOKENS)


def g(d: dict, *names, default=None):
    """Read a key given in camelCase or snake_case."""
    for n in names:
        if n in d:
            return d[n]
        snake = "".join("_" + c.lower() if c.isupper() else c for c in n)
        if snake in d:
            return d[snake]
    return default


def error_body(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


def rate_limit_body(quota_id: str, retry_s: float | None, model: str = "gemini-test-flash") -> dict:
    """A 429 as the Gemini API sends it: QuotaFailure naming the quota, Help, RetryInfo."""
    details = [
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "2"}]},
        {"@type": "type.googleapis.com/google.rpc.Help",
         "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    ]
    if retry_s is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_s:g}s"})
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": details,
                      "message": f"You exceeded your current quota. Quota: {quota_id}. Please retry in {retry_s}s."}}


DAILY_QUOTA = "GenerateRequestsPerDayPerProjectPerModel"
MINUTE_QUOTA = "GenerateRequestsPerMinutePerProjectPerModel"


STATUS_NAME = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 429: "RESOURCE_EXHAUSTED",
               500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class ScriptedServer:
    """Threaded HTTP server on 127.0.0.1:0 with a reply script; subclasses route requests."""

    def __init__(self, latency_s: float = 0.0):
        self.script: list[Reply] = []
        self.latency_s = latency_s
        self.requests: list[dict] = []  # {"method", "path", "headers", "json"}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        # gather = N: a request waits (at most 30 s) until N are in flight at once, so a test of
        # a concurrency limit sees the overlap happen however slowly the client is scheduled.
        self.gather = 0
        self._arrived = threading.Condition(self.lock)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output clean
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def send(self, status: int, body, headers: dict | None = None):
                data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    for k, v in (headers or {}).items():
                        self.send_header(k, str(v))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def handle_any(self, method: str):
                raw = self._body() if method in ("POST", "PUT", "PATCH") else b""
                rec = {"method": method, "path": self.path, "headers": dict(self.headers.items()), "raw_len": len(raw)}
                try:
                    rec["json"] = json.loads(raw) if raw and raw[:1] in b"{[" else None
                except ValueError:
                    rec["json"] = None
                with server.lock:
                    server.requests.append(rec)
                try:
                    server.route(self, method, raw, rec)
                except Exception as e:  # a server bug must show up as a 500, not a hang
                    self.send(500, error_body(500, "INTERNAL", f"test server error: {e!r}"))

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

            def do_DELETE(self):
                self.handle_any("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stamp_requests(self) -> list[float]:
        """A list that gets the monotonic time of every scripted request as it arrives."""
        stamps: list[float] = []
        orig = self.serve_scripted

        def stamped(h, req, make_ok):
            stamps.append(time.monotonic())
            return orig(h, req, make_ok)

        self.serve_scripted = stamped
        return stamps

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else Reply()

    def serve_scripted(self, h, request_json: dict, make_ok):
        """Apply latency + the next scripted reply; make_ok(request_json, text, finish) builds a 200 body."""
        reply = self.next_reply()
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._arrived.notify_all()
            if self.gather:
                self._arrived.wait_for(lambda: self.in_flight >= self.gather or self.max_in_flight >= self.gather,
                                       timeout=30)
        try:
            time.sleep(self.latency_s + reply.delay_s)
        finally:
            with self.lock:
                self.in_flight -= 1
        if reply.status != 200:
            body = reply.body if reply.body is not None else error_body(
                reply.status, STATUS_NAME.get(reply.status, "UNKNOWN"), f"scripted {reply.status}")
            return h.send(reply.status, body, reply.headers)
        body = reply.body if reply.body is not None else make_ok(request_json, reply.text, reply.finish)
        return h.send(200, body, reply.headers)

    def count(self, method: str, path_part: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r["method"] == method and path_part in r["path"])

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def valid_answer(names: list[str], primary: str | None = None, hint: str = "") -> dict:
    """A schema-valid annotation: the primary (given, or chosen by hashing the hint) at 0.8."""
    if primary is None:
        primary = names[int(hashlib.sha256(hint.encode()).hexdigest(), 16) % len(names)]
    return {
        "visual_analysis": "The speaker on the left moves the mouth in time with the speech.",
        "audio_analysis": "Moderate pitch and loudness, steady rate.",
        "text_analysis": f"The words: {hint[:80]}",
        "emotions": {n: (0.8 if n == primary else 0.05) for n in names},
        "primary_emotion": primary,
        "rationale": f"{primary} fits the voice and the words best.",
    }


class GeminiServer(ScriptedServer):
    def __init__(self, latency_s: float = 0.0, processing_polls: int = 2, primary: str | None = None):
        super().__init__(latency_s)
        self.files: dict[str, dict] = {}  # id -> {"data": bytearray, "polls": n, "meta": {...}}
        self.uploads: dict[str, dict] = {}
        self.processing_polls = processing_polls
        self.primary = primary
        self.deleted: list[str] = []
        self._ids = 0
        self.thoughts = 0  # thoughtsTokenCount per answer
        self.cached = 0  # cachedContentTokenCount per answer (of the TEXT prompt)
        self.daily_quota: int | None = None  # answers allowed before the per-day quota is exhausted
        self.answered = 0
        # Batch API: id -> {"op": operation JSON, "requests": [(key, request)], "mode", "gets"}
        self.batches: dict[str, dict] = {}
        self.batch_pending_gets = 1  # GETs that still see PENDING (then one RUNNING, then the end state)
        self.batch_hold = False  # True: jobs stay PENDING until released
        self.batch_final = "BATCH_STATE_SUCCEEDED"
        # Cleared: a create is recorded at once, its answer waits until set (a client can die
        # between "the service has the job" and "the client heard so" for as long as a test needs).
        self.batch_create_answer = threading.Event()
        self.batch_create_answer.set()
        # generateContent requests after the first `hold_after` wait until `answers_released`
        # is set: a client can be killed while a known number of answers is stored.
        self.hold_after: int | None = None
        self.answers_released = threading.Event()
        self._generate_started = 0

    # --- generateContent ---------------------------------------------------------------
    def _ok(self, req: dict, text: str | None, finish: str = "STOP") -> dict:
        gen = g(req, "generationConfig") or {}
        schema = g(gen, "responseSchema") or {}
        names = list((g(schema.get("properties", {}).get("emotions", {}), "properties") or {}).keys())
        contents = req.get("contents") or []
        parts = [p for c in contents for p in (c.get("parts") or [])]
        transcript = " ".join(p.get("text", "") for p in parts if "text" in p)
        if text is None:
            text = json.dumps(valid_answer(names or ["Joy", "Sadness"], self.primary, transcript))
        media_bytes = 0
        for p in parts:
            inline = g(p, "inlineData")
            if inline:
                data = inline.get("data", "")
                media_bytes += len(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
        video, audio = media_bytes // 200 + 1, media_bytes // 400 + 1  # a file part counts as 1 + 1
        prompt_tokens = 300 + video + audio
        out_tokens = max(1, len(text) // 4)
        um = {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens,
              "totalTokenCount": prompt_tokens + out_tokens + self.thoughts,
              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 300}, {"modality": "VIDEO", "tokenCount": video},
                                      {"modality": "AUDIO", "tokenCount": audio}]}
        if self.thoughts:
            um["thoughtsTokenCount"] = self.thoughts
        if self.cached:
            um["cachedContentTokenCount"] = self.cached
            um["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish, "index": 0}],
            "usageMetadata": um,
            "modelVersion": "test-model",
        }

    def _check_files(self, req: dict):
        for c in req.get("contents") or []:
            for p in c.get("parts") or []:
                fd = g(p, "fileData")
                if fd:
                    fid = g(fd, "fileUri", default="").rsplit("/", 1)[-1]
                    f = self.files.get(fid)
                    if f is None or f["meta"]["state"] != "ACTIVE":
                        return f"file {fid} is not ACTIVE"
        return None

    def route(self, h, method: str, raw: bytes, rec: dict):
        u = urlparse(h.path)
        path = u.path
        if method == "POST" and path.startswith("/v1/models/") and path.endswith(":generateContent"):
            if not (h.headers.get("x-goog-api-key") or "key" in parse_qs(u.query)):
                return h.send(401, error_body(401, "UNAUTHENTICATED", "API key missing"))
            bad = self._check_files(rec["json"] or {})
            if bad:
                return h.send(400, error_body(400, "FAILED_PRECONDITION", bad))
            with self.lock:
                over = self.daily_quota is not None and self.answered >= self.daily_quota
                self._generate_started += 1
                held = self.hold_after is not None and self._generate_started > self.hold_after
            if held:
                self.answers_released.wait(300)
            if over:
                return h.send(429, rate_limit_body(DAILY_QUOTA, 40000.0))
            return self.serve_scripted(h, rec["json"] or {}, self._answer)
        if method == "POST" and path.startswith("/v1/models/") and path.endswith(":batchGenerateContent"):
            return self._batch_create(h, path, rec["json"] or {})
        if method == "GET" and path == "/v1/batches":
            with self.lock:
                ops = [self._batch_op(bid) for bid in list(self.batches)]
            return h.send(200, {"operations": ops})
        if method == "GET" and path.startswith("/v1/batches/"):
            bid = path.rsplit("/", 1)[-1]
            if bid not in self.batches:
                return h.send(404, error_body(404, "NOT_FOUND", f"batch {bid} not found"))
            with self.lock:
                return h.send(200, self._batch_op(bid, advance=True))
        if method == "GET" and "files/" in path and path.endswith(":download"):
            fid = path.rsplit("/", 1)[-1].split(":")[0]
            f = self.files.get(fid)
            if f is None:
                return h.send(404, error_body(404, "NOT_FOUND", f"file {fid} not found"))
            return h.send(200, f["data"])
        if method == "POST" and path == "/upload/v1/files":
            q = parse_qs(u.query)
            cmd = (h.headers.get("X-Goog-Upload-Command") or "").lower()
            if "upload_id" not in q and "start" in cmd:
                self._ids += 1
                uid = f"u{self._ids}"
                meta = g(rec["json"] or {}, "file") or {}
                self.uploads[uid] = {"data": bytearray(), "meta": meta,
                                     "size": int(h.headers.get("X-Goog-Upload-Header-Content-Length") or 0)}
                return h.send(200, {}, {"X-Goog-Upload-URL": f"{self.url}/upload/v1/files?upload_id={uid}",
                                        "X-Goog-Upload-Status": "active"})
            uid = q.get("upload_id", [""])[0]
            up = self.uploads.get(uid)
            if up is None:
                return h.send(404, error_body(404, "NOT_FOUND", "no such upload"))
            if int(h.headers.get("X-Goog-Upload-Offset") or 0) != len(up["data"]):
                return h.send(400, error_body(400, "INVALID_ARGUMENT", "bad offset"))
            up["data"] += raw
            if "finalize" not in cmd:
                return h.send(200, {}, {"X-Goog-Upload-Status": "active"})
            fid = f"f{uid}"
            meta = {"name": f"files/{fid}", "uri": f"{self.url}/v1/files/{fid}",
                    "mimeType": g(up["meta"], "mimeType", default="video/mp4"), "sizeBytes": str(len(up["data"])),
                    "state": "PROCESSING", "displayName": g(up["meta"], "displayName", default="")}
            self.files[fid] = {"data": bytes(up["data"]), "polls": 0, "meta": meta}
            return h.send(200, {"file": meta}, {"X-Goog-Upload-Status": "final"})
        if path.startswith("/v1/files/"):
            fid = path.rsplit("/", 1)[-1]
            if fid.endswith(":download"):
                return h.send(404, error_body(404, "NOT_FOUND", path))
            f = self.files.get(fid)
            if f is None:
                return h.send(404, error_body(404, "NOT_FOUND", f"file {fid} not found"))
            if method == "GET":
                f["polls"] += 1
                if f["polls"] > self.processing_polls:
                    f["meta"]["state"] = "ACTIVE"
                return h.send(200, f["meta"])
            if method == "DELETE":
                self.files.pop(fid)
                self.deleted.append(fid)
                return h.send(200, {})
        return h.send(404, error_body(404, "NOT_FOUND", f"{method} {path}"))

    # --- answers, quotas ----------------------------------------------------------------
    def _answer(self, req: dict, text: str | None, finish: str = "STOP") -> dict:
        with self.lock:
            self.answered += 1
        return self._ok(req, text, finish)

    # --- Batch API ------------------------------------------------------------------------
    def _batch_create(self, h, path: str, body: dict):
        batch = g(body, "batch") or {}
        inp = g(batch, "inputConfig") or {}
        model = path[len("/v1/"):-len(":batchGenerateContent")]
        if g(inp, "fileName"):
            fid = g(inp, "fileName").rsplit("/", 1)[-1]
            f = self.files.get(fid)
            if f is None:
                return h.send(400, error_body(400, "INVALID_ARGUMENT", f"input file {fid} not found"))
            reqs = []
            for line in f["data"].decode().splitlines():
                if line.strip():
                    d = json.loads(line)
                    reqs.append((d.get("key"), d.get("request") or {}))
            mode = "file"
        else:
            items = g(g(inp, "requests") or {}, "requests") or []
            reqs = [((it.get("metadata") or {}).get("key"), it.get("request") or {}) for it in items]
            mode = "inline"
        with self.lock:
            self._ids += 1
            bid = f"b{self._ids}"
            self.batches[bid] = {"requests": reqs, "mode": mode, "gets": 0, "state": "BATCH_STATE_PENDING",
                                 "meta": {"model": model, "displayName": g(batch, "displayName", default=""),
                                          "createTime": "2026-12-01T20:00:00Z"},
                                 "keys_meta": [it.get("metadata") for it in (g(g(inp, "requests") or {}, "requests") or [])],
                                 "output": None}
            op = self._batch_op(bid)
        self.batch_create_answer.wait(300)
        return h.send(200, op)

    def close(self):
        self.release_batches()  # no handler thread is left waiting
        super().close()

    def release_batches(self):
        """Let held jobs finish (batch_hold = False), held create answers and held answers go out."""
        self.batch_hold = False
        self.answers_released.set()
        self.batch_create_answer.set()

    def _batch_op(self, bid: str, advance: bool = False) -> dict:
        b = self.batches[bid]
        if advance and b["state"] in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING") and not self.batch_hold:
            b["gets"] += 1
            if b["gets"] > self.batch_pending_gets + 1:
                self._batch_finish(b)
            elif b["gets"] > self.batch_pending_gets:
                b["state"] = "BATCH_STATE_RUNNING"
        meta = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
                "name": f"batches/{bid}", "state": b["state"], **b["meta"],
                "batchStats": {"requestCount": str(len(b["requests"]))}}
        if b["output"] is not None:
            meta["output"] = b["output"]
        op = {"name": f"batches/{bid}", "metadata": meta}
        if b["state"] not in ("BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"):
            op["done"] = True
        return op

    def _batch_finish(self, b: dict):
        """Answer every request (the script first, like interactive calls), then the end state."""
        b["state"] = self.batch_final
        if self.batch_final != "BATCH_STATE_SUCCEEDED":
            return
        outs = []
        for key, req in b["requests"]:
            reply = self.script.pop(0) if self.script else Reply()
            bad = self._check_files(req)
            if bad:
                outs.append((key, {"error": {"code": 400, "message": bad, "status": "FAILED_PRECONDITION"}}))
            elif reply.status != 200:
                err = (reply.body or {}).get("error") if isinstance(reply.body, dict) else None
                outs.append((key, {"error": err or {"code": reply.status, "message": f"scripted {reply.status}",
                                                    "status": STATUS_NAME.get(reply.status, "UNKNOWN")}}))
            else:
                self.answered += 1
                outs.append((key, {"response": reply.body if reply.body is not None else
                                   self._ok(req, reply.text, reply.finish)}))
        if b["mode"] == "file":
            self._ids += 1
            fid = f"out{self._ids}"
            data = "\n".join(json.dumps({"key": k, **o}) for k, o in outs).encode() + b"\n"
            self.files[fid] = {"data": data, "polls": 0, "meta": {
                "name": f"files/{fid}", "uri": f"{self.url}/v1/files/{fid}", "mimeType": "application/jsonl",
                "sizeBytes": str(len(data)), "state": "ACTIVE", "downloadUri": f"{self.url}/v1/files/{fid}:download"}}
            b["output"] = {"responsesFile": f"files/{fid}"}
        else:
            b["output"] = {"inlinedResponses": {"inlinedResponses": [
                {**o, "metadata": {"key": k}} for k, o in outs]}}


if __name__ == "__main__":  # a manual check: python tests/gemini_server.py
    s = GeminiServer()
    print("Gemini test server at", s.url, "(Ctrl+C stops)")
    try:
        s.thread.join()
    except KeyboardInterrupt:
        s.close()
