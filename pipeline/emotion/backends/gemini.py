"""Gemini through the real google-genai client (async), with our own pacing and retries.

The SDK's own retries are off (it ignores Retry-After); `with_retries` retries 408/429/5xx,
timeouts and dropped connections with exponential backoff + jitter and waits at least as
long as Retry-After asks. `MIKUPAL_GEMINI_BASE_URL` points the client at a proxy or a test
server. The key comes from GEMINI_API_KEY (or GOOGLE_API_KEY) and is scrubbed from
everything this module returns or logs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from pathlib import Path

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..ratelimit import RETRY_STATUS, RateLimiter, RetryPolicy, RetryStats, TransientError, parse_retry_after, with_retries
from ..redact import scrub
from ..schema import InvalidAnswer, gemini_schema, parse_answer
from .base import Backend, Reply, Request, cost, estimate_input_tokens

log = logging.getLogger("mikupal.emotion")

BLOCK_FINISH = {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "RECITATION", "IMAGE_SAFETY"}
MEDIA_RESOLUTION = {
    "low": types.MediaResolution.MEDIA_RESOLUTION_LOW,
    "medium": types.MediaResolution.MEDIA_RESOLUTION_MEDIUM,
    "high": types.MediaResolution.MEDIA_RESOLUTION_HIGH,
}
# The retry of an invalid answer shifts the seed: a deterministic model would repeat itself.
INVALID_RETRY_SEED_SHIFT = 7919


class BackendConfigError(Exception):
    """The backend cannot start (no key, bad setting); one line saying what to set."""


def api_key_from_env() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or None


def _headers(exc: BaseException):
    resp = getattr(exc, "response", None)
    for obj in (resp, getattr(resp, "_response", None)):
        h = getattr(obj, "headers", None)
        if h is not None:
            return h
    return {}


def classify(exc: BaseException) -> TransientError | None:
    """Which failures are worth another try, and how long the server asked us to wait."""
    if isinstance(exc, genai_errors.APIError):
        if exc.code in RETRY_STATUS:
            ra = parse_retry_after(_headers(exc).get("Retry-After") or _headers(exc).get("retry-after"))
            return TransientError(f"HTTP {exc.code} {exc.status or ''}".strip(), retry_after=ra, status=exc.code)
        return None
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TransientError("request timed out")
    try:
        import aiohttp

        if isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            return TransientError(f"connection error ({type(exc).__name__})")
    except ImportError:  # pragma: no cover - aiohttp ships with the app
        pass
    if isinstance(exc, ConnectionError):
        return TransientError(f"connection error ({type(exc).__name__})")
    # Without aiohttp the SDK uses httpx/httpx2, whose errors subclass neither of the above.
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"TimeoutException", "NetworkError", "RemoteProtocolError"}:
        return TransientError(f"connection error ({type(exc).__name__})")
    return None


class GeminiBackend(Backend):
    name = "gemini"

    def __init__(self, cfg: dict, *, api_key: str | None = None, base_url: str | None = None):
        e, c = cfg["emotion"], cfg["clips"]
        key = api_key or api_key_from_env()
        if not key:
            raise BackendConfigError(
                "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY), or run with --backend baseline")
        self._secrets = (key,)
        self.cfg = cfg
        self.model = str(e["model"])
        self.base_url = base_url or os.environ.get("MIKUPAL_GEMINI_BASE_URL") or None
        self.timeout_s = float(e["timeout_s"])
        self.client = genai.Client(  # keep the reference: a dropped Client closes its sessions
            api_key=key,
            http_options=types.HttpOptions(base_url=self.base_url, timeout=int(self.timeout_s * 1000)),
        )
        self.policy = RetryPolicy(int(e["max_retries"]), float(e["backoff_s"]), float(e["max_backoff_s"]))
        self.limiter = RateLimiter(float(e["rpm"]), float(e["tpm"]))
        self.temperature = float(e["temperature"])
        self.max_output_tokens = int(e.get("max_output_tokens", 2048))
        self.media_resolution = str(e.get("media_resolution", "low"))
        self.thinking_budget = int(e.get("thinking_budget", -1))
        self.inline_max_bytes = float(c["inline_max_mb"]) * 1e6
        self.poll_s = 0.5
        self.file_timeout_s = max(60.0, self.timeout_s * 2)
        self._rng = random.Random(int(e.get("seed", 0)))

    def _scrub(self, text: object) -> str:
        return scrub(text, self._secrets)

    async def _call(self, fn, what: str, stats: RetryStats):
        async def once():
            return await asyncio.wait_for(fn(), timeout=self.timeout_s + 5.0)
        return await with_retries(once, classify, self.policy, what=what, rng=self._rng, stats=stats)

    async def _upload(self, req: Request, stats: RetryStats) -> types.File:
        """Files API: resumable upload, then poll until ACTIVE."""
        path = req.clip.path
        f = await self._call(
            lambda: self.client.aio.files.upload(file=path, config=types.UploadFileConfig(
                mime_type=req.clip.mime_type, display_name=Path(path).name)),
            f"{req.item}: upload", stats)
        deadline = time.monotonic() + self.file_timeout_s
        delay = self.poll_s
        while True:
            state = str(getattr(f.state, "value", f.state) or "")
            if state == "ACTIVE":
                return f
            if state == "FAILED":
                err = getattr(f, "error", None)
                raise RuntimeError(f"the Files API could not process the clip ({self._scrub(err) or 'FAILED'})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uploaded clip stayed {state or 'PROCESSING'} for {self.file_timeout_s:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)
            f = await self._call(lambda: self.client.aio.files.get(name=f.name), f"{req.item}: file status", stats)

    async def _delete(self, name: str) -> None:
        try:
            await asyncio.wait_for(self.client.aio.files.delete(name=name), timeout=self.timeout_s)
        except Exception as e:  # noqa: BLE001 - the file expires on its own after 48 h
            log.warning("could not delete uploaded clip %s: %s", name, self._scrub(e))

    def _config(self, req: Request, seed: int) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=req.prompt.system,
            temperature=self.temperature,
            seed=seed,
            max_output_tokens=self.max_output_tokens,
            response_mime_type="application/json",
            response_schema=gemini_schema(req.prompt.label_set),
            media_resolution=MEDIA_RESOLUTION.get(self.media_resolution),
            thinking_config=types.ThinkingConfig(thinking_budget=self.thinking_budget) if self.thinking_budget >= 0 else None,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),  # no tools here
        )

    async def annotate(self, req: Request) -> Reply:
        stats = RetryStats()
        uploaded: types.File | None = None
        est = estimate_input_tokens(req.clip.duration_s, req.clip.has_video, self.media_resolution,
                                    len(req.prompt.system)) + self.max_output_tokens
        t_start = time.monotonic()
        try:
            if req.clip.size_bytes > self.inline_max_bytes:
                uploaded = await self._upload(req, stats)
                media = types.Part.from_uri(file_uri=uploaded.uri, mime_type=uploaded.mime_type or req.clip.mime_type)
            else:
                media = types.Part.from_bytes(data=Path(req.clip.path).read_bytes(), mime_type=req.clip.mime_type)
            contents = [types.Content(role="user", parts=[media, types.Part.from_text(text=req.prompt.user_text(req.transcript))])]
            tin = tout = 0
            reason, raw_text, raw = "", "", ""
            for attempt in range(2):  # one retry for an invalid answer
                seed = req.seed + attempt * INVALID_RETRY_SEED_SHIFT
                await self.limiter.acquire(est)
                resp = await self._call(
                    lambda: self.client.aio.models.generate_content(model=self.model, contents=contents,
                                                                    config=self._config(req, seed)),
                    f"{req.item}: generate", stats)
                um = resp.usage_metadata
                a_in = int(getattr(um, "prompt_token_count", 0) or 0)
                a_out = int(getattr(um, "candidates_token_count", 0) or 0) + int(getattr(um, "thoughts_token_count", 0) or 0)
                self.limiter.refund(est - a_in - a_out)
                tin, tout = tin + a_in, tout + a_out
                raw = self._scrub(json.dumps(_dump(resp), ensure_ascii=False))
                blocked = _blocked(resp)
                raw_text = self._scrub(_text(resp))
                if blocked and not raw_text:
                    return Reply(None, raw, tin, tout, cost(self.cfg, tin, tout), time.monotonic() - t_start,
                                 error=f"blocked by the model's safety filter ({blocked}); review the clip by hand",
                                 retries=stats.retries)
                try:
                    answer = parse_answer(raw_text, req.prompt.label_set)
                except InvalidAnswer as e:
                    reason = str(e)
                    log.info("%s: invalid answer (%s)%s", req.item, reason, "; retrying once" if attempt == 0 else "")
                    continue
                return Reply(answer, raw, tin, tout, cost(self.cfg, tin, tout), time.monotonic() - t_start,
                             retries=stats.retries, meta={"seed": seed, "files_api": uploaded is not None})
            return Reply(None, raw_text or raw, tin, tout, cost(self.cfg, tin, tout), time.monotonic() - t_start,
                         error=f"invalid answer after one retry: {reason}", retries=stats.retries)
        finally:
            if uploaded is not None and uploaded.name:
                await self._delete(uploaded.name)

    async def aclose(self) -> None:
        try:
            await self.client.aio.aclose()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _dump(resp) -> dict:
    d = resp.model_dump(mode="json", exclude_none=True)
    d.pop("sdk_http_response", None)
    return d


def _text(resp) -> str:
    for cand in resp.candidates or []:
        parts = getattr(cand.content, "parts", None) or []
        return "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    return ""


def _blocked(resp) -> str:
    pf = getattr(resp, "prompt_feedback", None)
    if pf is not None and getattr(pf, "block_reason", None):
        return f"prompt {getattr(pf.block_reason, 'value', pf.block_reason)}"
    if not resp.candidates:
        return "no candidates"
    fr = resp.candidates[0].finish_reason
    fr = str(getattr(fr, "value", fr) or "")
    return fr if fr in BLOCK_FINISH else ""
