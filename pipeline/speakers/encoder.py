"""The speaker encoder: resemblyzer's GE2E voice encoder (Apache-2.0) through its own loader.

Weights: ``<models dir>/resemblyzer/pretrained.pt`` when present (a user-supplied or newer
checkpoint), else the ``pretrained.pt`` that ships inside the resemblyzer wheel. The wheel
is installed with ``--no-deps`` (its ``webrtcvad`` requirement is an sdist; the project's
``webrtcvad-wheels`` provides the same module), see packaging/bootstrap.sh.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np

from ..stage import ModelMissingError

MODEL_NAME = "resemblyzer-ge2e"
RATE = 16000
WEIGHTS_SUBPATH = Path("resemblyzer") / "pretrained.pt"
INSTALL_HINT = "pip install --no-deps 'resemblyzer==0.1.4'"  # the wheel carries the weights


def _import_resemblyzer():
    with warnings.catch_warnings():  # it imports scipy.ndimage.morphology (deprecated alias)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import resemblyzer
        except ModuleNotFoundError as e:
            fix = INSTALL_HINT if e.name == "resemblyzer" else f"pip install {e.name}"
            raise ModelMissingError(f"speakers: the speaker encoder needs the package {e.name}; run: {fix}") from None
    return resemblyzer


def find_weights(models_dir: Path | None) -> Path:
    """The GE2E checkpoint: the models dir's copy first, then the one inside the package."""
    tried = []
    if models_dir is not None:
        p = Path(models_dir) / WEIGHTS_SUBPATH
        if p.is_file():
            return p
        tried.append(str(p))
    spec = importlib.util.find_spec("resemblyzer")
    if spec is not None and spec.origin:
        p = Path(spec.origin).parent / "pretrained.pt"
        if p.is_file():
            return p
        tried.append(str(p))
    if spec is None:
        raise ModelMissingError(f"speakers: the speaker encoder package resemblyzer is not installed; run: {INSTALL_HINT}")
    raise ModelMissingError(f"speakers: GE2E weights not found (looked at {' and '.join(tried)}); "
                            f"reinstall resemblyzer ({INSTALL_HINT}) or put pretrained.pt at {tried[0]}")


class SpeakerEncoder:
    """One loaded encoder: ``embed(samples_16k)`` -> (256-d unit vector or None, seconds voiced)."""

    dim = 256

    def __init__(self, models_dir: Path | None, device: str = "cpu"):
        rz = _import_resemblyzer()
        self.weights = find_weights(models_dir)
        try:
            self.net = rz.VoiceEncoder(device=device, verbose=False, weights_fpath=self.weights)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint: say which file
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise ModelMissingError(f"speakers: cannot load the GE2E weights {self.weights} ({type(e).__name__}: {first}); "
                                    f"replace the file or reinstall resemblyzer: {INSTALL_HINT}") from None
        self.net.eval()
        self._preprocess = rz.preprocess_wav

    def embed(self, samples: np.ndarray, min_voiced_s: float = 0.5) -> tuple[np.ndarray | None, float]:
        """Embed one utterance (float32 mono at 16 kHz).

        resemblyzer's own preprocessing (volume normalisation, WebRTC trimming of long
        silences) first; when less than ``min_voiced_s`` of voice is left the untrimmed audio
        is embedded instead, and silence (no energy at all) gives None.
        """
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size < RATE // 10 or not np.any(np.abs(x) > 1e-4):
            return None, 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wav = self._preprocess(x, source_sr=None)
        voiced = len(wav) / RATE
        if voiced < min_voiced_s:
            wav = x
        vec = self.net.embed_utterance(wav.astype(np.float32))
        if not np.all(np.isfinite(vec)):
            return None, voiced
        return vec.astype(np.float32), voiced
