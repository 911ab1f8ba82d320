"""Any OpenAI-compatible chat server (vLLM, Ollama, LM Studio) running a model that takes
images and audio (e.g. Qwen2.5-Omni): clip frames go as images, the clip's audio as
``input_audio``, and the JSON answer is validated against the same schema as Gemini's.

`MIKUPAL_OPENAI_BASE_URL` (default http://127.0.0.1:8000/v1) and `MIKUPAL_OPENAI_API_KEY`
(optional: local servers usually take any value) configure the client. Nothing listening at
the URL fails the stage at once with one line naming the URL and the variable; a model in the
price table (or PROJECT/prices.json) is costed, any other counts as free (a local server).
"""
from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import random
import time
import wave

import cv2
import numpy as np
import openai

from ..clips import AUDIO_RATE, read_audio, sample_frames
from ..prices import PriceTable, Usage, load_prices
from ..ratelimit import (RETRY_STATUS, AdaptiveConcurrency, RateLimiter, RetryPolicy, RetryStats, ServiceUnreachable,
                         TransientError, parse_retry_after, with_retries)
from ..redact import scrub
from ..schema import InvalidAnswer, json_schema, parse_answer
from .base import Backend, Reply, Request, estimate_input_tokens
from .gemini import INVALID_RETRY_SEED_SHIFT

log = logging.getLogger("mikupal.emotion")
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def _refused(exc: BaseException) -> bool:
    """Nothing listens at the address (refused, unknown host): retrying cannot help."""
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, ConnectionRefusedError) or type(e).__name__ == "ConnectError":
            return True
        e = e.__cause__ or e.__context__
    return False


def classify(exc: BaseException) -> TransientError | None:
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in RETRY_STATUS:
            ra = parse_retry_after(exc.response.headers.get("retry-after") if exc.response is not None else None)
            return TransientError(f"HTTP {exc.status_code}", retry_after=ra, status=exc.status_code,
                                  throttled=exc.status_code == 429)
        return None
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
        return TransientError("request timed out")
    if isinstance(exc, (openai.APIConnectionError, ConnectionError)):
        return TransientError(f"connection error ({type(exc).__name__})")
    return None


def _jpeg_data_url(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("could not encode a clip frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _wav_b64(x: np.ndarray) -> str:
    bio = io.BytesIO()
    with wave.open(bio, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(AUDIO_RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return base64.b64encode(bio.getvalue()).decode()


class OpenAICompatBackend(Backend):
    name = "openai"

    def __init__(self, cfg: dict, *, api_key: str | None = None, base_url: str | None = None,
                 prices: PriceTable | None = None):
        e = cfg["emotion"]
        key = api_key or os.environ.get("MIKUPAL_OPENAI_API_KEY") or "not-needed"
        self._secrets = (key,) if key != "not-needed" else ()
        self.cfg = cfg
        self.model = str(e["model"])
        self.base_url = base_url or os.environ.get("MIKUPAL_OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.timeout_s = float(e["timeout_s"])
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout_s)
        self.policy = RetryPolicy(int(e["max_retries"]), float(e["backoff_s"]), float(e["max_backoff_s"]))
        self.limiter = RateLimiter(float(e["rpm"]), float(e["tpm"]))
        self.gate = AdaptiveConcurrency(int(e["concurrency"]))
        self.prices = prices or load_prices()
        self.temperature = float(e["temperature"])
        self.max_output_tokens = int(e["max_output_tokens"])
        self.frame_every_s = 1.0
        self.max_frames = 8
        self._rng = random.Random(int(e["seed"]))

    def _scrub(self, text: object) -> str:
        return scrub(text, self._secrets)

    def _messages(self, req: Request) -> list[dict]:
        content: list[dict] = []
        if req.clip.has_video:
            for rgb in sample_frames(req.clip.path, self.frame_every_s, self.max_frames):
                content.append({"type": "image_url", "image_url": {"url": _jpeg_data_url(rgb)}})
        audio = read_audio(req.clip.path)
        if len(audio):
            content.append({"type": "input_audio", "input_audio": {"data": _wav_b64(audio), "format": "wav"}})
        content.append({"type": "text", "text": req.prompt.user_text(req.transcript)})
        return [{"role": "system", "content": req.prompt.system}, {"role": "user", "content": content}]

    async def annotate(self, req: Request) -> Reply:
        stats = RetryStats()
        t_start = time.monotonic()
        messages = await asyncio.get_running_loop().run_in_executor(None, self._messages, req)
        fmt = {"type": "json_schema", "json_schema": {"name": "emotion_annotation", "strict": True,
                                                      "schema": json_schema(req.prompt.label_set)}}
        est = estimate_input_tokens(req.clip.duration_s, req.clip.has_video, "medium", len(req.prompt.system)) \
            + self.max_output_tokens
        usage = Usage()
        reason, raw_text, raw = "", "", ""
        for attempt in range(2):
            seed = req.seed + attempt * INVALID_RETRY_SEED_SHIFT
            await self.limiter.acquire(est)

            async def call():
                try:
                    async with self.gate:
                        return await asyncio.wait_for(self.client.chat.completions.create(
                            model=self.model, messages=messages, temperature=self.temperature, seed=seed,
                            max_tokens=self.max_output_tokens, response_format=fmt), timeout=self.timeout_s + 5.0)
                except openai.APIConnectionError as e:
                    if _refused(e):
                        raise ServiceUnreachable(
                            f"no OpenAI-compatible server answers at {self.base_url} (connection refused); start it, "
                            "or set MIKUPAL_OPENAI_BASE_URL to its address (e.g. http://127.0.0.1:8000/v1)") from None
                    raise

            def on_transient(t: TransientError) -> None:
                if t.throttled:
                    self.gate.throttled()

            try:
                resp = await with_retries(call, classify, self.policy, what=f"{req.item}: chat", rng=self._rng,
                                          stats=stats, on_transient=on_transient)
            except ServiceUnreachable as e:
                await self.gate.stop(e)
                raise
            await self.gate.succeeded()
            u = getattr(resp, "usage", None)
            a_in = int(getattr(u, "prompt_tokens", 0) or 0)
            a_out = int(getattr(u, "completion_tokens", 0) or 0)
            self.limiter.refund(est - a_in - a_out)
            usage = usage + Usage(prompt={"text": a_in} if a_in else {}, candidates=a_out)
            raw = self._scrub(resp.model_dump_json(exclude_none=True))
            choice = resp.choices[0] if resp.choices else None
            raw_text = self._scrub(choice.message.content if choice and choice.message else "") or ""
            if choice is None or (choice.finish_reason == "content_filter" and not raw_text):
                why = "no choices" if choice is None else "content_filter"
                return Reply(None, raw, usage, self.cost(usage), time.monotonic() - t_start,
                             error=f"blocked by the server's content filter ({why}); review the clip by hand",
                             kind="blocked", retries=stats.retries)
            if choice.finish_reason == "length":
                return Reply(None, raw, usage, self.cost(usage), time.monotonic() - t_start,
                             error=f"answer cut off at max_output_tokens={self.max_output_tokens} (finish reason length); "
                                   "raise [emotion] max_output_tokens", kind="max_tokens", retries=stats.retries)
            try:
                answer = parse_answer(raw_text, req.prompt.label_set)
            except InvalidAnswer as e:
                reason = str(e)
                log.info("%s: invalid answer (%s)%s", req.item, reason, "; retrying once" if attempt == 0 else "")
                continue
            return Reply(answer, raw, usage, self.cost(usage), time.monotonic() - t_start,
                         retries=stats.retries, meta={"seed": seed})
        return Reply(None, raw_text or raw, usage, self.cost(usage), time.monotonic() - t_start,
                     error=f"invalid answer after one retry: {reason}", kind="invalid", retries=stats.retries)

    def cost(self, usage: Usage) -> float:
        c = self.prices.cost(self.model, usage)
        return 0.0 if c is None else c

    async def aclose(self) -> None:
        try:
            await self.client.close()
        except Exception:  # noqa: BLE001
            pass
