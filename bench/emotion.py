"""Emotion-stage benchmark.

1. Throughput of the Gemini backend (real google-genai client, the stage's shared loop,
   semaphore and limiter) against the local protocol server with injected latency, at
   concurrency 1..64, printed as achieved / ideal (ideal = concurrency / latency) and as
   speed-up over concurrency 1 measured in the same process.
2. Tokens and dollars per hour of speech for the default packaging settings, from the
   documented token rates (FACTS.md: ~258 tokens per sampled frame at 1 frame/s, ~66 at low
   media resolution, 32 tokens per second of audio) and the config price table.

    .venv/bin/python bench/emotion.py [--latency 0.25] [--max-concurrency 64]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def throughput(latency: float, levels: list[int], items_per_level) -> list[tuple[int, int, float]]:
    from emotion_fixtures import API_KEY, project_with_segments, set_cfg  # tests helpers
    from gemini_server import GeminiServer

    from mikupal.demo import make_demo_clip
    from mikupal.emotion.stage import EmotionStage
    from mikupal.project import Project

    tmp = Path(tempfile.mkdtemp(prefix="mikupal-bench-"))
    clip = make_demo_clip(tmp / "demo.mp4", lines=("Honestly, I am so tired of waiting here every single day.",))
    server = GeminiServer(latency_s=latency)
    os.environ.update(GEMINI_API_KEY=API_KEY, MIKUPAL_GEMINI_BASE_URL=server.url)
    project = Project.create(tmp / "proj")
    project_with_segments(project, clip)
    out = []
    try:
        for c in levels:
            n = items_per_level(c)
            set_cfg(project, emotion__backend="gemini", emotion__concurrency=c, emotion__runs=n,
                    emotion__rpm=10 ** 9, emotion__tpm=10 ** 12)
            stage = EmotionStage(project)
            db = project.db()
            tasks = [stage.prepare(db, it) for it in stage.pending(db)]
            stage.load()
            stage.process_many(tasks[:1])  # warm: clip cut, session open
            t = time.perf_counter()
            results = stage.process_many(tasks)
            dt = time.perf_counter() - t
            stage.close()
            bad = [r for r in results if isinstance(r, BaseException) or "annotation" not in r]
            if bad:
                raise SystemExit(f"benchmark request failed: {bad[0]!r}")
            out.append((c, n, dt))
    finally:
        server.close()
    return out


def cost_table(latency_note: str = "") -> None:
    from mikupal import config
    from mikupal.emotion.backends.base import AUDIO_TOKENS_PER_S, FRAME_TOKENS
    from mikupal.emotion.prompt import build_prompt

    cfg = config.defaults()
    e = cfg["emotion"]
    prompt = build_prompt(e["label_set"], e["language"])
    sys_tokens = len(prompt.system) / 4  # ~4 characters per token for English text
    user_tokens = 30  # transcript line of a ~6 s utterance
    out_tokens = 450  # three short analyses, 26 numbers, a rationale (typical answer length)
    mean_utt_s = 6.0  # utterances are 2-30 s; 6 s is typical of conversational speech
    n_utt = 3600 / mean_utt_s
    print(f"\nTokens and dollars per hour of speech ([emotion] model={e['model']}, "
          f"prices ${e['price_input_per_mtok']}/M in, ${e['price_output_per_mtok']}/M out; "
          f"{n_utt:.0f} utterances of {mean_utt_s:.0f} s; system prompt ~{sys_tokens:.0f} tokens)")
    print(f"{'media_resolution':>16} {'media tok/s':>11} {'input Mtok/h':>12} {'output Mtok/h':>13} {'USD/h':>7}")
    for res in ("low", "medium"):
        per_s = FRAME_TOKENS[res] + AUDIO_TOKENS_PER_S  # Gemini samples video at 1 frame/s
        tin = 3600 * per_s + n_utt * (sys_tokens + user_tokens)
        tout = n_utt * out_tokens
        usd = tin * e["price_input_per_mtok"] / 1e6 + tout * e["price_output_per_mtok"] / 1e6
        mark = "  <- default" if res == e["media_resolution"] else ""
        print(f"{res:>16} {per_s:>11} {tin / 1e6:>12.3f} {tout / 1e6:>13.3f} {usd:>7.2f}{mark}")
    print("Per run; --runs N multiplies both. Thinking tokens (billed as output) are not included.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.25, help="server latency per request (s)")
    ap.add_argument("--max-concurrency", type=int, default=64)
    a = ap.parse_args()
    levels = [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= a.max_concurrency]
    rows = throughput(a.latency, levels, lambda c: max(8, 3 * c))
    base = rows[0][1] / rows[0][2]
    print(f"Gemini backend vs local server, {a.latency * 1000:.0f} ms injected latency per request")
    print(f"{'concurrency':>11} {'items':>5} {'items/s':>8} {'ideal/s':>8} {'achieved/ideal':>14} {'speed-up vs c=1':>15}")
    for c, n, dt in rows:
        rate = n / dt
        ideal = c / a.latency
        print(f"{c:>11} {n:>5} {rate:>8.1f} {ideal:>8.1f} {rate / ideal:>14.2f} {rate / base:>15.1f}")
    cost_table()


if __name__ == "__main__":
    main()
