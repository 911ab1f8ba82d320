"""Vocal separation with MDX-Net models through audio-separator.

Weights live in `<models dir>/audio-separator/`. audio-separator resolves a model by
three files besides the weights: `download_checks.json` (the model list),
`mdx_model_data.json` and `vr_model_data.json` (parameters keyed by the weights' MD5).
With all of them in place it runs offline; when downloads are allowed and a file is
missing, audio-separator fetches it from its upstream URL (with a progress bar).

Long audio is separated in chunks (with context margins that are cut away), so memory
stays bounded by the chunk length, not the file length.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..media import read_audio, wav_info
from ..models import SEPARATOR_METADATA_URLS as METADATA_URLS
from ..models import SEPARATOR_SUBDIR as SUBDIR
from ..stage import ModelMissingError, StageError

# Where audio-separator itself fetches them; the model manager's registry lists them beside
# every MDX model, so `mikupal models download|check` fetch and report them too.
METADATA_FILES = tuple(METADATA_URLS)


def model_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / SUBDIR


def missing_files(model: str, directory: str | Path) -> list[str]:
    d = Path(directory)
    return [name for name in (model, *METADATA_FILES) if not (d / name).is_file()]


def _missing_message(model: str, directory: Path, missing: list[str]) -> str:
    return (f"separate: model {model!r} is not installed: missing {', '.join(missing)} in {directory}; "
            f"run `mikupal models download {model}` online, copy the files there, or set separate.model = \"none\"")


class VocalSeparator:
    """One loaded MDX-Net model; `separate_wav` turns a 44.1 kHz stereo mix into vocals."""

    def __init__(self, model: str, directory: str | Path, *, segment_size: int = 256, batch_size: int = 1,
                 allow_download: bool = False, chunk_s: float = 600.0, margin_s: float = 3.0,
                 log_level: int = logging.WARNING):
        self.model = model
        self.directory = Path(directory)
        self.segment_size = int(segment_size)
        self.batch_size = int(batch_size)
        self.allow_download = allow_download
        self.chunk_s = float(chunk_s)
        self.margin_s = float(margin_s)
        self.log_level = log_level
        self._sep = None
        self._workdir: str | None = None

    def load(self) -> None:
        missing = missing_files(self.model, self.directory)
        if missing and not self.allow_download:
            raise ModelMissingError(_missing_message(self.model, self.directory, missing))
        self._workdir = tempfile.mkdtemp(prefix="mikupal-sep-")
        # audio-separator reads this variable before its own argument; ours must win.
        os.environ.pop("AUDIO_SEPARATOR_MODEL_DIR", None)
        from audio_separator.separator import Separator

        self._sep = Separator(
            log_level=self.log_level,
            model_file_dir=str(self.directory),
            output_dir=self._workdir,
            output_format="WAV",
            output_single_stem="Vocals",
            normalization_threshold=1.0,  # no per-chunk gain change: chunks must join seamlessly
            use_soundfile=True,
            sample_rate=44100,
            mdx_params={"hop_length": 1024, "segment_size": self.segment_size, "overlap": 0.25,
                        "batch_size": self.batch_size, "enable_denoise": False},
        )
        try:
            self._sep.load_model(model_filename=self.model)
        except (OSError, RuntimeError, ValueError) as e:
            missing = missing_files(self.model, self.directory)
            if missing:  # a download was attempted and failed (offline)
                raise ModelMissingError(_missing_message(self.model, self.directory, missing)) from None
            raise StageError(f"separate: model {self.model!r} in {self.directory} failed to load "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None

    def close(self) -> None:
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _separate_array(self, stereo: np.ndarray) -> np.ndarray:
        """(n, 2) float mix -> (n,) mono vocals (mean of the two vocal channels)."""
        import soundfile as sf

        assert self._sep is not None and self._workdir is not None
        src = os.path.join(self._workdir, "chunk.wav")
        sf.write(src, stereo, 44100, subtype="FLOAT")
        outs = self._sep.separate(src, custom_output_names={"Vocals": "chunk_vocals"})
        path = next((o for o in outs if "chunk_vocals" in os.path.basename(o)), None)
        if path is None:
            raise StageError(f"separate: model {self.model!r} produced no Vocals stem; choose an MDX vocal/instrumental model")
        path = path if os.path.isabs(path) else os.path.join(self._workdir, path)
        y, _ = sf.read(path, dtype="float32", always_2d=True)
        os.unlink(path)
        y = y.mean(axis=1)
        if len(y) < len(stereo):
            y = np.pad(y, (0, len(stereo) - len(y)))
        return y[: len(stereo)]

    def separate_wav(self, mix44: str | Path, writer) -> int:
        """Separate a 44.1 kHz stereo WAV chunk by chunk; `writer(block)` receives mono vocals in order."""
        info = wav_info(mix44)
        if info.sample_rate != 44100:
            raise ValueError(f"{mix44}: separation needs 44.1 kHz input, got {info.sample_rate}")
        total, pos, written = info.duration_s, 0.0, 0
        while pos < total - 1e-6:
            end = min(total, pos + self.chunk_s)
            a, b = max(0.0, pos - self.margin_s), min(total, end + self.margin_s)
            x = read_audio(mix44, a, b)
            if x.ndim == 1:
                x = np.stack([x, x], axis=1)
            y = self._separate_array(x)
            lo = int(round((pos - a) * 44100))
            hi = lo + int(round(end * 44100)) - int(round(pos * 44100))
            block = y[lo:hi]
            writer(block)
            written += len(block)
            pos = end
        return written
