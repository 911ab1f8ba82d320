"""The vision stages' frame grid, read through the media layer.

Frames are sampled at ``fps`` on the grid t = k / fps (k is the frame *index* every vision
result is keyed by), only inside the given spans, as the picture is shown (rotation and
SAR applied; boxes are in those displayed pixels) and on the project clock. Which frame
serves a grid time, and what happens around damaged packets, is mikupal.media.frames'
rule, the same one the review player and the utterance clip use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..media import MediaError
from ..media.frames import DecodeStats, Frame, grid_indices, merge_spans
from ..media.frames import iter_frames as _media_frames
from ..stage import StageError

__all__ = ["DecodeStats", "Frame", "grid_indices", "iter_frames", "merge_spans"]


def iter_frames(path: str | Path, spans, fps: float, *, width: int | None = None, fmt: str = "rgb24",
                stats: DecodeStats | None = None) -> Iterator[Frame]:
    """Grid frames inside ``spans`` (merged, sorted), downscaled to ``width`` (never
    upscaled); a file that cannot be read is one StageError naming it and the fix."""
    try:
        yield from _media_frames(path, spans, fps, width=width, fmt=fmt, stats=stats)
    except MediaError as e:
        raise StageError(str(e)) from None
