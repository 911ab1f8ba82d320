"""Writing media: H.264 + AAC MP4 from pictures and samples (the utterance clip, the demo).

Pictures are RGB arrays, played at `fps` from t = 0; audio is float32 (-1..1), mono or
(n, 2), starting at t = 0 as well, so clip time 0 is the first frame and the first sample.
Files are written under a unique temporary name and renamed when complete.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from ..fileutil import atomic_write
from .probe import open_output


def write_mp4(path: str | Path, frames: Iterable[np.ndarray] | None, fps: float, audio: np.ndarray | None,
              audio_rate: int, *, crf: int = 26, preset: str = "veryfast", gop: int | None = None,
              audio_bitrate: int = 48000, threads: int = 1, size: tuple[int, int] | None = None) -> None:
    """Encode RGB `frames` (all of one size, or `size` = (w, h) to scale them) and mono
    `audio` into `path`. `frames` may be a generator: nothing is held but one frame."""
    rate = Fraction(fps).limit_denominator(1000)
    with atomic_write(path) as tmp, open_output(tmp, "mp4") as out:
        vs = None
        frames = iter(frames) if frames is not None else iter(())
        first = next(frames, None)
        if first is not None:
            h, w = first.shape[:2]
            w, h = size or (w, h)
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            opts = {"preset": preset, "crf": str(crf), "threads": str(threads)}
            if gop:
                opts["g"] = str(gop)
            vs.options = opts
        as_ = None
        pcm = None
        if audio is not None and len(audio):
            pcm = np.asarray(audio, np.float32)
            pcm = pcm.reshape(1, -1) if pcm.ndim == 1 else pcm.T
            as_ = out.add_stream("aac", rate=audio_rate)
            as_.layout = "mono" if pcm.shape[0] == 1 else "stereo"
            as_.bit_rate = audio_bitrate
        a_pos, step = 0, 1024

        def audio_until(t_end: float | None):
            # keep audio interleaved with video (players and muxers expect it)
            nonlocal a_pos
            if as_ is None:
                return
            stop = pcm.shape[1] if t_end is None else min(pcm.shape[1], int(t_end * audio_rate))
            layout = as_.layout.name
            while a_pos < stop:
                chunk = np.ascontiguousarray(pcm[:, a_pos: a_pos + step])
                if chunk.shape[0] > 1:
                    chunk = np.ascontiguousarray(chunk.T.reshape(1, -1))  # packed stereo
                    af = av.AudioFrame.from_ndarray(chunk, format="flt", layout=layout)
                else:
                    af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                af.sample_rate = audio_rate
                af.pts = a_pos
                af.time_base = Fraction(1, audio_rate)
                for p in as_.encode(af):
                    out.mux(p)
                a_pos += step

        if vs is not None:
            i, img = 0, first
            while img is not None:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                vf = vf.reformat(width=vs.width, height=vs.height, format="yuv420p")
                vf.pts = i
                vf.time_base = 1 / rate
                for p in vs.encode(vf):
                    out.mux(p)
                i += 1
                audio_until(i / float(rate))
                img = next(frames, None)
            for p in vs.encode(None):
                out.mux(p)
        audio_until(None)
        if as_ is not None:
            for p in as_.encode(None):
                out.mux(p)
