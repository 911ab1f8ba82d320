"""Emotion-stage benchmark.

1. Throughput of the Gemini backend (real google-genai client, process_async fanned out on one
   event loop the way the runner's executor does, the backend's limiter and adaptive gate)
   against the local protocol server with injected latency, at concurrency 1..64, printed as
   achieved / ideal (ideal = concurrency / latency) and as speed-up over concurrency 1
   measured in the same process.
2. Tokens and dollars per hour of speech from the estimator (mikupal.emotion.estimate: the
   documented media token rates and the shipped price table) for the default settings and
   the cheaper ones, as ratios to the default.

    .venv/bin/python bench/emotion.py [--latency 0.25] [--max-concurrency 64]
"""
from __future__ import annotations

import argparse
import asyncio
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

            async def fan_out(ts):
                sem = asyncio.Semaphore(stage.concurrency())

                async def one(t):
                    async with sem:
                        return await stage.process_async(t)

                return await asyncio.gather(*(one(t) for t in ts), return_exceptions=True)

            async def measure():
                await fan_out(tasks[:1])  # warm: clip cut, session open
                t = time.perf_counter()
                res = await fan_out(tasks)
                dt = time.perf_counter() - t
                await stage.aclose()
                return res, dt

            results, dt = asyncio.run(measure())
            bad = [r for r in results if isinstance(r, BaseException) or "annotation" not in r]
            if bad:
                raise SystemExit(f"benchmark request failed: {bad[0]!r}")
            out.append((c, n, dt))
    finally:
        server.close()
    return out


def cost_table() -> None:
    from mikupal import config
    from mikupal.emotion.estimate import MEAN_UTTERANCE_S, estimate_hour
    from mikupal.emotion.prompt import build_prompt

    base = config.defaults()
    system = build_prompt(base["emotion"]["label_set"], base["emotion"]["language"]).system
    rows = [("defaults (gemini-2.5-flash, low, thinking off)", {}),
            ("thinking on (thinking_budget = -1)", {"thinking_budget": -1}),
            ("media_resolution = medium", {"media_resolution": "medium"}),
            ("--batch", {"batch": True}),
            ("gemini-2.5-flash-lite", {"model": "gemini-2.5-flash-lite"}),
            ("cheapest: --batch, flash-lite, low", {"batch": True, "model": "gemini-2.5-flash-lite",
                                                    "media_resolution": "low"})]
    ests = []
    for name, over in rows:
        cfg = config.defaults()
        cfg["emotion"].update(over)
        ests.append((name, estimate_hour(cfg, system)))
    ref = ests[0][1].usd
    print(f"\nTokens and dollars per hour of speech (estimator: {ests[0][1].items} utterances of "
          f"{MEAN_UTTERANCE_S:.0f} s, prices of {ests[0][1].prices_as_of}; paper: < $0.50/h)")
    print(f"{'settings':<48} {'input Mtok':>10} {'output Mtok':>11} {'USD/h':>7} {'vs default':>10}")
    for name, e in ests:
        print(f"{name:<48} {sum(e.input_tokens.values()) / 1e6:>10.3f} {e.output_tokens / 1e6:>11.3f} "
              f"{e.usd:>7.2f} {e.usd / ref:>10.2f}")
    print("Per run; --runs N multiplies it. Implicit cache hits on the system prompt only lower it.")


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
