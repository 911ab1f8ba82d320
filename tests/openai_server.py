"""A local OpenAI-compatible chat-completions server (`POST /v1/chat/completions`) for tests.

Scripted like the Gemini server (``server.script`` of ``Reply``); by default it answers a valid
annotation built from the request's ``response_format`` JSON schema.
"""
from __future__ import annotations

import json
import time

from gemini_server import Reply, ScriptedServer, valid_answer  # noqa: F401 - Reply is re-exported for tests


class OpenAIServer(ScriptedServer):
    def __init__(self, latency_s: float = 0.0, primary: str | None = None):
        super().__init__(latency_s)
        self.primary = primary

    def _ok(self, req: dict, text: str | None, finish: str = "STOP") -> dict:
        schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
        names = list(schema.get("properties", {}).get("emotions", {}).get("properties", {}).keys())
        user = [m for m in req.get("messages", []) if m.get("role") == "user"]
        hint = " ".join(p.get("text", "") for m in user for p in (m.get("content") or []) if isinstance(p, dict))
        if text is None:
            text = json.dumps(valid_answer(names or ["joy", "sadness"], self.primary, hint))
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model", "test"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length" if finish == "MAX_TOKENS" else "stop"}],
                "usage": {"prompt_tokens": 500, "completion_tokens": max(1, len(text) // 4),
                          "total_tokens": 500 + max(1, len(text) // 4)}}

    def route(self, h, method: str, raw: bytes, rec: dict):
        if method == "POST" and h.path.rstrip("/").endswith("/v1/chat/completions"):
            if not (h.headers.get("Authorization") or "").startswith("Bearer "):
                return h.send(401, {"error": {"message": "no key", "type": "auth"}})
            return self.serve_scripted(h, rec["json"] or {}, self._ok)
        return h.send(404, {"error": {"message": f"{method} {h.path} not found"}})
