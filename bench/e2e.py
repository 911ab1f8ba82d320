"""End-to-end benchmark: the real stages on the demo clip's recipe, at 2 (default) and 10 minutes.

Each clip is the demo recipe (pipeline/demo.py: two astronaut faces, the left one speaking
espeak-ng lines, sidecar .srt) with the four demo lines repeated to the wanted length. The
project runs the default CPU configuration except where the demo must stay offline:
subtitles for ASR, no vocal separation, the baseline annotator; faces = auto (UltraFace on
CPU) and Light-ASD with the real weights from the models dir.

Printed per clip, each figure a ratio against a baseline measured in this process:
- per stage and end to end: x real time (video seconds per wall second) and x the time of
  a bare ``ffmpeg -f null`` decode of the same file (how many decodes the stage costs);
- time to the first stored label, as seconds and as a share of the whole run;
- peak RSS of the run (each clip runs in its own child process, so the figures are apart).
The machine's load average is printed with them: other engineers share the 2 cores.

    .venv/bin/python bench/e2e.py [--minutes 2] [--long] [--compare]
        --long adds the 10-minute clip; --compare reruns the first clip with the settings the
        vision stages had before (every frame detected, 6-length ASD in float32) for a speed-up
        measured under the same load.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = [
    'separate.model="none"', 'asr.source="subtitles"', 'faces.detector="auto"', 'asd.model="light-asd"',
    'emotion.backend="baseline"', 'emotion.model="baseline-v1"',
]


# What the vision stages did before issue 17: every frame detected, the official 6-length ASD.
PREVIOUS = ["faces.detect_every=1", 'asd.protocol="multi-length"', 'asd.precision="fp32"']


def build_clip(path: Path, minutes: float):
    from mikupal.demo import DEMO_LINES, make_demo_clip

    # One pass of the four lines with their 1 s gaps lasts about 16.4 s.
    reps = max(1, round(minutes * 60 / 16.4))
    return make_demo_clip(path, lines=DEMO_LINES * reps, speaker="left")


def ffmpeg_decode_s(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"], check=True)
    return time.perf_counter() - t


def child(clip_path: Path, root: Path, extra: list[str]) -> dict:
    """One clip through the whole pipeline in this (child) process; returns the figures."""
    from mikupal.ingest import add_videos
    from mikupal.project import Project
    from mikupal.runner import Runner

    decode_s = ffmpeg_decode_s(clip_path)
    Project.create(root)
    proj = Project.open(root, SETTINGS + extra)
    db = proj.db()
    add_videos(db, [clip_path], on_line=lambda s: None)
    video_s = db.conn.execute("SELECT SUM(duration_s) FROM videos").fetchone()[0]
    db.conn.close()
    first: dict[str, float] = {}
    t0 = time.monotonic()

    def on_event(ev):
        if ev.stage == "emotion" and ev.done >= 1 and "label" not in first:
            first["label"] = time.monotonic() - t0

    summary = Runner(proj, devices="cpu", on_event=on_event).run()
    elapsed = time.monotonic() - t0
    if not summary.ok:
        raise SystemExit(f"run failed: {summary.message} ({summary.failed_items} failed items)")
    db = proj.db()
    labels = db.conn.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]
    segs = db.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    db.conn.close()
    stages = {n: st.elapsed() for n, st in summary.stages.items() if st.started_at is not None}
    return {"video_s": video_s, "elapsed_s": elapsed, "decode_s": decode_s, "stages": stages,
            "first_label_s": first.get("label"), "labels": labels, "segments": segs,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def report(name: str, r: dict) -> None:
    v, d = r["video_s"], r["decode_s"]
    print(f"\n{name}: {v:.0f} s of video, {r['segments']} segments, {r['labels']} labels; "
          f"ffmpeg -f null decode {d:.2f} s (x{v / d:.0f} real time); load average {os.getloadavg()[0]:.1f}")
    print(f"  {'stage':<10} {'wall s':>8} {'x real time':>12} {'x decode':>9}")
    for n, s in r["stages"].items():
        print(f"  {n:<10} {s:8.1f} {v / s if s else float('inf'):12.2f} {s / d:9.0f}")
    e = r["elapsed_s"]
    print(f"  {'end to end':<10} {e:8.1f} {v / e:12.2f} {e / d:9.0f}")
    fl = r["first_label_s"]
    print(f"  first label after {fl:.1f} s = {100 * fl / e:.0f}% of the run" if fl is not None else "  no label stored")
    print(f"  peak RSS {r['peak_rss_mb']:.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the default clip")
    ap.add_argument("--long", action="store_true", help="also the 10-minute clip")
    ap.add_argument("--set", action="append", default=[], help="extra config override, e.g. faces.detect_every=1")
    ap.add_argument("--compare", action="store_true",
                    help="also run the first clip with the previous settings (detector on every frame, official "
                         "multi-length ASD in float32) and print the speed-up against it")
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("MIKUPAL_MODELS_DIR", REPO.parent / "shared" / "models")))
    ap.add_argument("--child", nargs=2, metavar=("CLIP", "ROOT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ["MIKUPAL_MODELS_DIR"] = str(a.models)
    if a.child:
        print(json.dumps(child(Path(a.child[0]), Path(a.child[1]), a.set)))
        return
    import torch

    print(f"end-to-end benchmark: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"models {a.models}, load average {os.getloadavg()[0]:.1f} (shared machine)")
    tmp = Path(tempfile.mkdtemp(prefix="mikupal-bench-e2e-"))
    def run(clip_path: Path, root: Path, settings: list[str]) -> dict:
        cmd = [sys.executable, __file__, "--child", str(clip_path), str(root), "--models", str(a.models)]
        for s in settings:
            cmd += ["--set", s]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    runs = [a.minutes] + ([10.0] if a.long else [])
    try:
        _clips(a, tmp, runs, run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _clips(a, tmp: Path, runs: list[float], run) -> None:
    for i, minutes in enumerate(runs):
        clip = build_clip(tmp / f"clip{minutes:g}.mp4", minutes)
        r = run(clip.path, tmp / f"p{minutes:g}", a.set)
        report(f"{minutes:g}-minute clip", r)
        if a.compare and i == 0:
            old = run(clip.path, tmp / f"p{minutes:g}-previous", a.set + PREVIOUS)
            report(f"{minutes:g}-minute clip, previous settings ({' '.join(PREVIOUS)})", old)
            print("  speed-up of the current settings: " + ", ".join(
                f"{n} {old['stages'][n] / r['stages'][n]:.1f}x" for n in ("faces", "asd") if r["stages"].get(n))
                + f", end to end {old['elapsed_s'] / r['elapsed_s']:.1f}x")


if __name__ == "__main__":
    main()
