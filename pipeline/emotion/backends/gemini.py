"""Gemini through the real google-genai client (async), with our own pacing and retries.

The SDK's own retries are off; `with_retries` retries 408/429/5xx, timeouts and dropped
connections with exponential backoff + jitter and waits at least as long as the 429 body's
RetryInfo.retryDelay asks. A rate limit also lowers the requests in flight (adaptive
concurrency); a per-day quota (QuotaFailure ...PerDay...) stops the stage (QuotaExhausted).
Cost comes from each response's usage_metadata and the price table (prices.py). `MIKUPAL_GEMINI_BASE_URL` points the client at a proxy or a test
server. The key comes from GEMINI_API_KEY (or GOOGLE_API_KEY) and is scrubbed from
everything this module returns or logs.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..prices import PriceTable, Usage, load_prices, usage_from
from ..ratelimit import (RETRY_STATUS, AdaptiveConcurrency, QuotaExhausted, RateLimiter, RetryPolicy, RetryStats,
                         TransientError, is_daily, parse_retry_after, rpc_wait_and_quota, with_retries)
from ..redact import scrub
from ..schema import Answer, InvalidAnswer, gemini_schema, parse_answer
from .base import Backend, Reply, Request, estimate_input_tokens

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
    """Which failures are worth another try, and how long the server asked us to wait.

    A 429 naming a per-day quota raises QuotaExhausted: waiting inside the run cannot help."""
    if isinstance(exc, genai_errors.APIError):
        if exc.code in RETRY_STATUS:
            delay, quotas = rpc_wait_and_quota(exc.details)
            daily = [q for q in quotas if is_daily(q)]
            if exc.code == 429 and daily:
                raise QuotaExhausted(daily[0], delay) from None
            if delay is None:  # proxies may still send the header
                delay = parse_retry_after(_headers(exc).get("Retry-After") or _headers(exc).get("retry-after"))
            what = f"HTTP {exc.code} {exc.status or ''}".strip() + (f" (quota {quotas[0]})" if quotas else "")
            return TransientError(what, retry_after=delay, status=exc.code, throttled=exc.code == 429)
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


_NO_THINKING = re.compile(r"gemini-(1\.|2\.0)")  # models without thinking reject a thinking config


def thinking_config(model: str, budget: int) -> types.ThinkingConfig | None:
    """0 turns thinking off on Flash models; Pro models cannot turn it off, so they keep their
    default (as with -1); N caps it. Models that never think get no thinking config."""
    m = model.lower()
    if budget < 0 or _NO_THINKING.search(m) or (budget == 0 and "flash" not in m):
        return None
    return types.ThinkingConfig(thinking_budget=budget)


def generate_config(cfg: dict, req_prompt, seed: int) -> types.GenerateContentConfig:
    """The request settings, one definition for interactive and Batch API requests."""
    e = cfg["emotion"]
    return types.GenerateContentConfig(
        system_instruction=req_prompt.system,
        temperature=float(e["temperature"]),
        seed=seed,
        max_output_tokens=int(e["max_output_tokens"]),
        response_mime_type="application/json",
        response_schema=gemini_schema(req_prompt.label_set),
        media_resolution=MEDIA_RESOLUTION.get(str(e["media_resolution"])),
        thinking_config=thinking_config(str(e["model"]), int(e["thinking_budget"])),
    )


@dataclass
class Judged:
    """One response, judged: a valid answer, or why not (kind: invalid, blocked, max_tokens)."""

    answer: Answer | None
    kind: str
    reason: str
    raw: str  # the whole response as JSON (scrubbed)
    text: str  # the answer text (scrubbed)
    usage: Usage


def judge(resp: types.GenerateContentResponse, ls, max_output_tokens: int, secrets: tuple[str, ...] = ()) -> Judged:
    """Validate one response exactly the same way for interactive and batch answers."""
    usage = usage_from(resp.usage_metadata)
    raw = scrub(json.dumps(_dump(resp), ensure_ascii=False), secrets)
    text = scrub(_text(resp), secrets)
    blocked = _blocked(resp)
    if blocked and not text:
        return Judged(None, "blocked", f"blocked by the model's safety filter ({blocked}); review the clip by hand",
                      raw, text, usage)
    if _finish(resp) == "MAX_TOKENS":
        thought = f", {usage.thoughts} of them thinking" if usage.thoughts else ""
        return Judged(None, "max_tokens", f"answer cut off at max_output_tokens={max_output_tokens} (finish reason "
                      f"MAX_TOKENS, {usage.output_tokens} output tokens{thought}); raise [emotion] max_output_tokens"
                      f"{' or lower thinking_budget' if usage.thoughts else ''}", raw, text, usage)
    try:
        return Judged(parse_answer(text, ls), "", "", raw, text, usage)
    except InvalidAnswer as e:
        return Judged(None, "invalid", str(e), raw, text, usage)


class GeminiBackend(Backend):
    name = "gemini"

    def __init__(self, cfg: dict, *, api_key: str | None = None, base_url: str | None = None,
                 prices: PriceTable | None = None):
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
        self.prices = prices or load_prices()
        self.policy = RetryPolicy(int(e["max_retries"]), float(e["backoff_s"]), float(e["max_backoff_s"]))
        self.limiter = RateLimiter(float(e["rpm"]), float(e["tpm"]))
        self.gate = AdaptiveConcurrency(int(e["concurrency"]))
        self.max_output_tokens = int(e["max_output_tokens"])
        self.media_resolution = str(e["media_resolution"])
        self.inline_max_bytes = float(c["inline_max_mb"]) * 1e6
        self.poll_s = 0.5
        self.file_timeout_s = max(60.0, self.timeout_s * 2)
        self._rng = random.Random(int(e["seed"]))

    def _scrub(self, text: object) -> str:
        return scrub(text, self._secrets)

    def cost(self, usage: Usage, batch: bool = False) -> float | None:
        return self.prices.cost(self.model, usage, batch=batch)

    async def call(self, fn, what: str, stats: RetryStats | None = None):
        """One API call with retries, inside the adaptive concurrency gate."""
        async def once():
            async with self.gate:
                return await asyncio.wait_for(fn(), timeout=self.timeout_s + 5.0)

        def on_transient(t: TransientError) -> None:
            if t.throttled:
                self.gate.throttled()

        try:
            out = await with_retries(once, classify, self.policy, what=what, rng=self._rng, stats=stats,
                                     on_transient=on_transient)
        except QuotaExhausted as e:
            await self.gate.stop(e)  # no new request starts; those in flight finish
            raise
        await self.gate.succeeded()
        return out

    async def upload(self, path: str, mime_type: str, what: str, stats: RetryStats | None = None) -> types.File:
        """Files API: resumable upload, then poll until ACTIVE."""
        f = await self.call(
            lambda: self.client.aio.files.upload(file=path, config=types.UploadFileConfig(
                mime_type=mime_type, display_name=Path(path).name)),
            f"{what}: upload", stats)
        deadline = time.monotonic() + self.file_timeout_s
        delay = self.poll_s
        while True:
            state = str(getattr(f.state, "value", f.state) or "")
            if state == "ACTIVE":
                return f
            if state == "FAILED":
                err = getattr(f, "error", None)
                raise RuntimeError(f"the Files API could not process {Path(path).name} ({self._scrub(err) or 'FAILED'})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uploaded file stayed {state or 'PROCESSING'} for {self.file_timeout_s:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)
            f = await self.call(lambda: self.client.aio.files.get(name=f.name), f"{what}: file status", stats)

    async def _delete(self, name: str) -> None:
        try:
            await asyncio.wait_for(self.client.aio.files.delete(name=name), timeout=self.timeout_s)
        except Exception as e:  # noqa: BLE001 - the file expires on its own after 48 h
            log.warning("could not delete uploaded clip %s: %s", name, self._scrub(e))

    def contents(self, media: types.Part, req_prompt, transcript: str) -> list[types.Content]:
        return [types.Content(role="user", parts=[media, types.Part.from_text(text=req_prompt.user_text(transcript))])]

    def judge(self, resp: types.GenerateContentResponse, ls) -> Judged:
        return judge(resp, ls, self.max_output_tokens, self._secrets)

    async def annotate(self, req: Request) -> Reply:
        stats = RetryStats()
        uploaded: types.File | None = None
        est = estimate_input_tokens(req.clip.duration_s, req.clip.has_video, self.media_resolution,
                                    len(req.prompt.system)) + self.max_output_tokens
        t_start = time.monotonic()
        try:
            if req.clip.size_bytes > self.inline_max_bytes:
                uploaded = await self.upload(req.clip.path, req.clip.mime_type, req.item, stats)
                media = types.Part.from_uri(file_uri=uploaded.uri, mime_type=uploaded.mime_type or req.clip.mime_type)
            else:
                media = types.Part.from_bytes(data=Path(req.clip.path).read_bytes(), mime_type=req.clip.mime_type)
            contents = self.contents(media, req.prompt, req.transcript)
            usage = Usage()
            j: Judged | None = None
            for attempt in range(2):  # one retry for an invalid answer
                seed = req.seed + attempt * INVALID_RETRY_SEED_SHIFT
                await self.limiter.acquire(est)
                cfg = generate_config(self.cfg, req.prompt, seed)
                cfg.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)  # no tools here
                resp = await self.call(
                    lambda: self.client.aio.models.generate_content(model=self.model, contents=contents, config=cfg),
                    f"{req.item}: generate", stats)
                j = self.judge(resp, req.prompt.label_set)
                usage = usage + j.usage
                self.limiter.refund(est - j.usage.input_tokens - j.usage.output_tokens)
                if j.kind == "invalid":
                    log.info("%s: invalid answer (%s)%s", req.item, j.reason, "; retrying once" if attempt == 0 else "")
                    continue
                break
            dt = time.monotonic() - t_start
            if j.answer is not None:
                return Reply(j.answer, j.raw, usage, self.cost(usage), dt, retries=stats.retries,
                             meta={"seed": seed, "files_api": uploaded is not None})
            why = f"invalid answer after one retry: {j.reason}" if j.kind == "invalid" else j.reason
            return Reply(None, j.text or j.raw if j.kind == "invalid" else j.raw, usage, self.cost(usage), dt,
                         error=why, kind=j.kind, retries=stats.retries)
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


def _finish(resp) -> str:
    if not resp.candidates:
        return ""
    fr = resp.candidates[0].finish_reason
    return str(getattr(fr, "value", fr) or "")


def _blocked(resp) -> str:
    pf = getattr(resp, "prompt_feedback", None)
    if pf is not None and getattr(pf, "block_reason", None):
        return f"prompt {getattr(pf.block_reason, 'value', pf.block_reason)}"
    if not resp.candidates:
        return "no candidates"
    fr = resp.candidates[0].finish_reason
    fr = str(getattr(fr, "value", fr) or "")
    return fr if fr in BLOCK_FINISH else ""
