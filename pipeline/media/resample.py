"""Streaming sample-rate conversion of arrays (libswresample), for audio made in memory.

The separator writes its vocals block by block; each block is converted on the fly so the
16 kHz rendering never needs the whole track in memory.
"""
from __future__ import annotations

import av
import numpy as np


class StreamResampler:
    """Mono float32 blocks at `rate_in` in, mono int16 arrays at `rate_out` out."""

    def __init__(self, rate_in: int, rate_out: int):
        self.rate_in = rate_in
        self._r = av.AudioResampler(format="s16", layout="mono", rate=rate_out)

    @staticmethod
    def _arrays(frames) -> np.ndarray:
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def feed(self, block: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block, dtype=np.float32)[None, :], format="flt",
                                           layout="mono")
        frame.sample_rate = self.rate_in
        return self._arrays(self._r.resample(frame))

    def flush(self) -> np.ndarray:
        return self._arrays(self._r.resample(None))
