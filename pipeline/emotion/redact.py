"""Keep API keys out of everything we store or print (DB rows, logs, errors, exports)."""
from __future__ import annotations

import os

SECRET_ENV = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "MIKUPAL_OPENAI_API_KEY")
MASK = "***"


def known_secrets(extra: tuple[str, ...] = ()) -> list[str]:
    vals = [os.environ.get(n, "") for n in SECRET_ENV] + list(extra)
    # Longest first so a key that contains another is masked whole; tiny values would mask noise.
    return sorted({v for v in vals if v and len(v) >= 8}, key=len, reverse=True)


def scrub(text: object, extra: tuple[str, ...] = ()) -> str:
    """`text` as a string with every known secret replaced by ***."""
    s = "" if text is None else str(text)
    for secret in known_secrets(extra):
        s = s.replace(secret, MASK)
    return s
