"""Media layer cost against raw decoding: each reader as a ratio to `ffmpeg -f null` on the
same file, both timed in this process.

    .venv/bin/python bench/media.py [--seconds 60] [--height 720]

Input: an H.264 + AAC mp4 made by ffmpeg (testsrc2 + sine), and an MPEG-TS copy of it
with a 3 s start offset (the clock path). Measured: audio extraction (16 kHz mono + 44.1
kHz stereo in one decode) against `ffmpeg -i X -vn -f null -`; the vision grid (every
frame at 25 fps, converted to 640 px RGB) and the player's frame_at stepping through
the file against `ffmpeg -i X -an -f null -` (decode only, no conversion).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from mikupal.media import VideoReader, extract_audio, iter_frames  # noqa: E402


def timed(fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


def ffmpeg_null(path: Path, *which: str) -> float:
    return timed(subprocess.run, ["ffmpeg", "-v", "error", "-nostdin", "-threads", "0", "-i", str(path), *which,
                                  "-f", "null", "-"], check=True)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--height", type=int, default=720)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mp4, ts = tmp / "in.mp4", tmp / "in.ts"
        w = args.height * 16 // 9
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={w}x{args.height}:r=25:d={args.seconds}",
                        "-f", "lavfi", "-i", f"sine=f=220:r=48000:d={args.seconds}", "-c:v", "libx264", "-preset",
                        "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(mp4)], check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), "-c", "copy", "-output_ts_offset", "3",
                        "-f", "mpegts", str(ts)], check=True)
        print(f"input: {args.seconds:.0f} s, {w}x{args.height} H.264 + AAC 48 kHz")
        for path in (mp4, ts):
            ff_a = ffmpeg_null(path, "-vn")
            t_a, _ = timed(extract_audio, path, {"a": (tmp / "a.wav", 16000, 1), "b": (tmp / "b.wav", 44100, 2)})
            ff_v = ffmpeg_null(path, "-an")
            t_v, n = timed(lambda: sum(1 for _ in iter_frames(path, [(0.0, args.seconds)], 25.0, width=640)))

            def step():
                with VideoReader(path, width=960) as r:
                    k = 0
                    while r.frame_at(k / 25.0) is not None and k < args.seconds * 25:
                        k += 1
                return k
            t_p, k = timed(step)
            print(f"{path.suffix}: audio extraction {t_a:.2f} s = {t_a / ff_a:.2f}x ffmpeg -vn -f null ({ff_a:.2f} s); "
                  f"vision grid {n} frames {t_v:.2f} s = {t_v / ff_v:.2f}x ffmpeg -an -f null ({ff_v:.2f} s); "
                  f"player stepping {k} frames {t_p:.2f} s = {t_p / ff_v:.2f}x")


if __name__ == "__main__":
    main()
