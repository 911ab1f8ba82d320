"""Audio front-end throughput: extraction, separation, VAD, ASR, as multiples of real time.

    .venv/bin/python bench/audio.py [--minutes 10]

Input: espeak-ng speech over music (10 dB SNR), tiled to the requested length, in an
mp4 (AAC 48 kHz stereo + a small H.264 track). Models are the tiny offline test models
(a band-mask MDX ONNX, a random-weight Whisper), so separation and ASR numbers measure
the pipeline's plumbing, audio I/O and the real libraries' overheads, not large-v3.
Extraction is also given as a ratio against `ffmpeg -i X -f null -` on the same file,
timed in this process.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from audio_fixtures import TINY_MDX, build_tiny_mdx, build_tiny_whisper, speech_scene, write_video  # noqa: E402
from mikupal.media import extract_audio, wav_info  # noqa: E402


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the synthetic input")
    ap.add_argument("--asr-minutes", type=float, default=2.0, help="ASR runs on this much (tiny model)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mikupal-bench-audio-"))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args) -> None:
    rate = 48000
    mix, _, _ = speech_scene(["hello there how are you doing today", "the weather is lovely this afternoon",
                              "please pass me the salt right now"], rate, snr_db=10.0, background="music")
    reps = int(np.ceil(args.minutes * 60 * rate / len(mix)))
    audio = np.tile(mix, reps)[: int(args.minutes * 60 * rate)]
    video = write_video(work / "in.mp4", audio, rate, channels=2, fps=5)
    dur = len(audio) / rate
    print(f"input: {dur / 60:.1f} min, {video.stat().st_size / 1e6:.1f} MB (AAC stereo 48 kHz + H.264 64x48 @5 fps)")

    rows = []

    def report(name, seconds, seconds_audio, note=""):
        rows.append((name, seconds, seconds_audio / seconds if seconds else float("inf"), note))

    if shutil.which("ffmpeg"):
        t_ff, _ = timed(subprocess.run, ["ffmpeg", "-v", "error", "-nostdin", "-i", str(video), "-f", "null", "-"],
                        check=True)
    else:
        t_ff = None
    t_ex, tracks = timed(extract_audio, video, {"a": (work / "mix16k.wav", 16000, 1),
                                                "b": (work / "mix44k.wav", 44100, 2)})
    report("extract (16k mono + 44.1k stereo)", t_ex, dur,
           f"{t_ex / t_ff:.2f}x the time of ffmpeg -f null ({t_ff:.2f} s)" if t_ff else "ffmpeg not installed")

    from mikupal.audio.separate import VocalSeparator

    build_tiny_mdx(work / "models" / "audio-separator")
    sep = VocalSeparator(TINY_MDX, work / "models" / "audio-separator")
    t_load, _ = timed(sep.load)
    import soundfile as sf

    with sf.SoundFile(str(work / "vocals44k.wav"), "w", 44100, 1, "PCM_16", format="WAV") as w:
        t_sep, _ = timed(sep.separate_wav, tracks["b"].path, w.write)
    sep.close()
    report("separate (tiny MDX, onnxruntime)", t_sep, dur, f"model load {t_load:.1f} s not counted")

    from mikupal.audio import vad as V

    wav16 = tracks["a"].path
    for engine in ("webrtc", "silero"):
        t_vad, (regions, _) = timed(V.detect, wav16, V.VadParams(engine=engine))
        report(f"vad ({engine})", t_vad, dur, f"{len(regions)} regions")

    from mikupal.audio.asr import WhisperTranscriber

    model = build_tiny_whisper(work / "whisper")
    cut = work / "asr16k.wav"
    x, _ = sf.read(str(wav16), frames=int(args.asr_minutes * 60 * 16000), dtype="float32")
    sf.write(str(cut), x, 16000, subtype="PCM_16")
    asr_dur = wav_info(cut).duration_s
    regions, _ = V.detect(cut, V.VadParams(engine="silero"))
    for batched in (True, False):
        t = WhisperTranscriber(model, device="cpu", compute_type="int8", beam_size=1, batched=batched,
                               temperatures=(0.0,))
        t.load()
        t_asr, _ = timed(t.transcribe_wav, cut, regions)
        report(f"asr ({'batched' if batched else 'sequential'}, tiny random Whisper)", t_asr, asr_dur,
               f"on {asr_dur / 60:.1f} min")

    print(f"\n{'stage':44s} {'seconds':>8s} {'x real time':>12s} {'s per audio hour':>17s}  note")
    for name, s, xrt, note in rows:
        print(f"{name:44s} {s:8.2f} {xrt:12.1f} {3600 / xrt:17.1f}  {note}")


if __name__ == "__main__":
    main()
