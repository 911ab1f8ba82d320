"""Vision benchmark on CPU: face detectors, the tracker and active-speaker scoring.

Everything is printed as a multiple of real time at the 25 fps analysis rate (x1.0 = keeps
up with playback; higher is faster), next to the baseline measured in the same process:
grid decoding alone (threaded PyAV, downscaled to the detection width), the floor of the
faces stage.

1. Detectors at 640x360 and 1280x720 (synthetic demo clips): frames per second for the
   detector alone on frames at ``detect_width`` (640, the default; 1280 = no downscale for
   720p), and for the whole faces loop (decode + shot histogram + detect) at 640.
   S3FD has no weights offline: its row runs the real network with random weights and times
   the forward pass only (the box decoding of a random net is not representative).
2. Tracker: linking 3 faces per frame for 10 minutes of frames.
3. ASD: Light-ASD (official weights when the models dir has them, else random) per second of
   one face track, with the official 6-length averaging and with one pass (float32 and
   bfloat16); the AV-sync fallback for comparison.

    .venv/bin/python bench/vision.py [--frames 50] [--models ../shared/models]
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

import numpy as np  # noqa: E402

FPS = 25.0


def rt(fps: float) -> str:
    return f"x{fps / FPS:6.2f}"


def timed(fn, *a, **kw) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t, out


def decode(path: Path, width: int, n: int):
    from mikupal.vision.frames import iter_frames

    frames = []
    for f in iter_frames(path, [(0.0, n / FPS + 1)], FPS, width=width, fmt="rgb24"):
        frames.append(f)
        if len(frames) == n:
            break
    return frames


def detectors(models: Path | None):
    from mikupal.vision import faces as F

    out = {"haar": F.HaarDetector()}
    uf = models / "ultraface" if models else None
    if uf and (uf / "version-RFB-640.onnx").is_file():
        out["ultraface-320"] = F.UltraFaceDetector(uf / "version-RFB-320.onnx")
        out["ultraface-640"] = F.UltraFaceDetector(uf / "version-RFB-640.onnx")
    else:
        print("(ultraface skipped: no weights in the models dir)")
    return out


def s3fd_forward_fps(frames, batch: int = 4) -> float:
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    net = s3fd().eval()
    x = torch.from_numpy(np.stack([f.image for f in frames[:batch]]).transpose(0, 3, 1, 2).copy()).float()
    with torch.inference_mode():
        net(x[:1])  # warm
        dt, _ = timed(net, x)
    return len(x) / dt


def bench_detectors(clips: dict[str, Path], n: int, models: Path | None) -> None:
    from mikupal.vision import faces as F

    dets = detectors(models)
    print(f"\n1. Face detection, {n} frames per row (x = multiple of real time at {FPS:.0f} fps)")
    print(f"{'clip':>9} {'detect_width':>12} {'what':>22} {'frames/s':>9} {'real time':>10}")
    for res, path in clips.items():
        native = int(res.split("x")[0])
        for width in sorted({640, native}):
            dt, frames = timed(decode, path, width, n)
            print(f"{res:>9} {width:>12} {'decode only (baseline)':>22} {n / dt:9.1f} {rt(n / dt):>10}")
            for name, det in dets.items():
                det.detect([frames[0].image])
                dt, _ = timed(det.detect, [f.image for f in frames])
                print(f"{res:>9} {width:>12} {name:>22} {n / dt:9.1f} {rt(n / dt):>10}")
            k = 4 if width <= 640 else 2
            fps = s3fd_forward_fps(frames, batch=k)
            print(f"{res:>9} {width:>12} {'s3fd (net, batch %d)' % k:>22} {fps:9.2f} {rt(fps):>10}")
        # the whole loop of the faces stage at the default detect width
        for name, every in [(d, e) for d in ("ultraface-640", "haar") if d in dets for e in (1, 5)]:
            det = dets[name]

            def loop():
                from mikupal.vision.frames import iter_frames

                count, prev = 0, None
                for f in iter_frames(path, [(0.0, n / FPS + 1)], FPS, width=640, fmt="rgb24"):
                    h = F.frame_histogram(f.image)
                    if prev is not None:
                        F.histogram_distance(prev, h)
                    prev = h
                    if count % every == 0:  # [faces] detect_every: the tracker carries boxes between
                        det.detect([f.image])
                    count += 1
                    if count == n:
                        break
                return count

            dt, count = timed(loop)
            print(f"{res:>9} {640:>12} {f'faces loop, {name} /{every}':>22} {count / dt:9.1f} {rt(count / dt):>10}")


def bench_tracker() -> None:
    from mikupal.vision.faces import track_faces

    rng = np.random.default_rng(0)
    n = int(600 * FPS)
    dets = []
    for k in range(n):
        boxes = []
        for j, x0 in enumerate((50, 250, 450)):
            if rng.random() < 0.05:  # a missed detection now and then
                continue
            x = x0 + 20 * np.sin(k / 50 + j) + rng.normal(0, 2)
            boxes.append([x, 100 + rng.normal(0, 2), x + 80, 190 + rng.normal(0, 2), 0.95])
        dets.append((k, np.array(boxes)))
    cuts = set(range(0, n, 250))  # a shot every 10 s
    dt, tracks = timed(track_faces, dets, cuts=cuts)
    print(f"\n2. Tracker: {n} frames (10 min), 3 faces, a cut every 10 s -> {len(tracks)} tracks")
    print(f"   {n / dt:,.0f} frames/s = {rt(n / dt)} real time")


def bench_asd(models: Path | None, seconds: float = 8.0) -> None:
    import torch

    from mikupal.vision import asd as A

    w = models / "light-asd" / "finetuning_TalkSet.model" if models else None
    if w and w.is_file():
        net, which = A.load_light_asd(w), "official weights"
    else:
        net, which = A.LightASD().eval(), "random weights"
    t = int(seconds * FPS)
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (t, 112, 112), dtype=np.uint8)
    audio = (rng.standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
    print(f"\n3. Active speaker, one face track of {seconds:.0f} s ({which}, torch threads {torch.get_num_threads()})")
    dt_mfcc, feats = timed(A.mfcc, audio)
    print(f"   MFCC                              {seconds / dt_mfcc:8.1f} s of video per s = x{seconds / dt_mfcc:.1f} real time")
    A.multi_length_scores(net, faces[:25], feats[:100])  # warm
    dt_full, _ = timed(A.multi_length_scores, net, faces, feats)
    print(f"   Light-ASD, 6-length average       {seconds / dt_full:8.2f} s of video per s = x{seconds / dt_full:.2f} real time per track")
    for precision in ("fp32", "bf16"):
        A.score_tracks(net, [(faces, feats)], protocol="one-pass", precision=precision)  # warm: oneDNN builds its kernels per shape
        dt_one, _ = timed(A.score_tracks, net, [(faces, feats)], protocol="one-pass", precision=precision)
        print(f"   Light-ASD, one pass, {precision}          {seconds / dt_one:8.2f} s of video per s = x{seconds / dt_one:.2f} real time per track"
              f"  ({dt_full / dt_one:.1f}x the 6-length average)")
    print(f"   ([asd] precision = auto picks {A.resolve_precision('auto')} on this CPU)")
    dt_sync, _ = timed(A.sync_score, faces, audio, 16000)
    print(f"   AV-sync fallback                  {seconds / dt_sync:8.1f} s of video per s = x{seconds / dt_sync:.1f} real time per track")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("MIKUPAL_MODELS_DIR", REPO.parent / "shared" / "models")))
    args = ap.parse_args()
    models = args.models if args.models.is_dir() else None

    from mikupal.demo import make_demo_clip

    tmp = Path(tempfile.mkdtemp(prefix="mikupal-bench-vision-"))
    line = ("Honestly, I am so tired of waiting here every single day.",)
    clips = {
        "640x360": make_demo_clip(tmp / "sd.mp4", lines=line).path,
        "1280x720": make_demo_clip(tmp / "hd.mp4", lines=line, width=1280, height=720).path,
    }
    import torch

    print(f"CPU benchmark: {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}, models {models}")
    bench_detectors(clips, args.frames, models)
    bench_tracker()
    bench_asd(models)


if __name__ == "__main__":
    main()
