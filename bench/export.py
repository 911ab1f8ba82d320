"""Export throughput, as ratios against decoding the same audio once in the same process.

    .venv/bin/python bench/export.py [--minutes 3] [--clips-per-minute 50]

Baseline: media.extract_audio of the source to 24 kHz mono WAV (the one decode an export
cannot avoid). Each format's ratio = its export time / the baseline; near 1 means cutting,
writing and checksumming add little to the decode.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mikupal import store  # noqa: E402
from mikupal.export import ExportFilters, export_dataset  # noqa: E402
from mikupal.ingest import add_videos  # noqa: E402
from mikupal.media import extract_audio  # noqa: E402
from mikupal.project import Project  # noqa: E402


def make_source(path: Path, seconds: float, rate: int = 48000) -> None:
    out = av.open(str(path), mode="w", format="matroska")
    st = out.add_stream("flac", rate=rate)
    st.layout = "stereo"
    rng = np.random.default_rng(0)
    step = 4096
    for i in range(0, int(seconds * rate), step):
        t = (np.arange(step) + i) / rate
        x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(step)) * 32767
        pcm = np.repeat(x.astype(np.int16)[None, :], 2, axis=0).T.reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="s16", layout="stereo")
        fr.sample_rate, fr.pts = rate, i
        for p in st.encode(fr):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
    out.close()


def build(root: Path, minutes: float, per_minute: int) -> Project:
    src = root / "source.mkv"
    make_source(src, minutes * 60)
    proj = Project.create(root / "proj")
    db = proj.db()
    vid = add_videos(db, [src]).added[0][0]
    n = int(minutes * per_minute)
    gap = minutes * 60 / n
    with store.transaction(db) as conn:
        for i in range(n):
            seg = conn.execute("INSERT INTO segments (video_id, start_s, end_s, text, language) VALUES (?,?,?,?,?)",
                               (vid, i * gap, i * gap + gap * 0.8, f"utterance {i}", "en")).lastrowid
            conn.execute("INSERT INTO annotations (segment_id, backend, model, prompt_sha, label_set, primary_emotion,"
                         " intensities_json, created_at) VALUES (?,?,?,?,?,?,?,?)",
                         (seg, "gemini", "gemini-2.5-flash", "p", "cowen26", "Joy", json.dumps({"Joy": 0.8}), store.now()))
    db.conn.close()
    return proj


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--clips-per-minute", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        proj = build(root, args.minutes, args.clips_per_minute)
        t = time.perf_counter()
        extract_audio(root / "source.mkv", {"a": (root / "baseline.wav", 24000, 1)})
        base = time.perf_counter() - t
        print(f"baseline: decode {args.minutes:g} min of 48 kHz stereo FLAC to 24 kHz mono WAV = 1.00")
        for fmt in ("jsonl", "hf", "webdataset", "lab", "elan", "lhotse"):
            t = time.perf_counter()
            r = export_dataset(proj, root / f"out-{fmt}", fmt, ExportFilters(), audio="mix", sample_rate=24000)
            dt = time.perf_counter() - t
            print(f"export {fmt:<10} {r.n_items:>4} clips: {dt / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
