"""Active-speaker detection: Light-ASD (our PyTorch re-implementation), TalkNet-ASD (in
:mod:`mikupal.vision.talknet`, same inputs and interface), the AV-sync fallback, and the
multi-length scoring both networks share.

Light-ASD (Liao et al., CVPR 2023, arXiv 2303.04439) is re-implemented here so that it loads
the official state dict with ``strict=True``: the module names below (``model.visualEncoder``,
``model.audioEncoder``, ``model.GRU``, ``lossAV.FC``, ``lossV.FC``) and the layer shapes are
the contract. Inputs follow TalkNet's demo preprocessing:

- video: per face track at 25 fps, a crop around the face box enlarged by ``crop_scale`` 0.4
  and reaching below the chin (:func:`crop_face`), grayscale, resized to 224x224, centre
  112x112 kept; the network normalises pixels as (x/255-0.4161)/0.1688 itself;
- audio: 16 kHz mono at int16 scale, 13 MFCCs at 100 frames/s (:func:`mfcc`, numerically the
  same as ``python_speech_features.mfcc``), 4 audio frames per video frame.

The audio-visual head gives one logit per video frame; > 0 means speaking. TalkNet takes
exactly these inputs (Light-ASD inherited TalkNet's preprocessing) and is scored the same way.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct
from torch import nn

from ..stage import ModelMissingError

CROP_SIZE = 112
VIDEO_FPS = 25
MFCC_PER_FRAME = 4
# Light-ASD's evaluation and TalkNet's demo both score every track cut into chunks of 1..6 s
# and average the six results per frame (their {1,1,1,2,2,2,3,3,4,5,6} is a Python set
# literal, so each length counts once).
DURATION_WEIGHTS = {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1}


# ---------------------------------------------------------------------------------------
# Audio features
# ---------------------------------------------------------------------------------------
def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def _mel_filterbank(nfilt: int, nfft: int, rate: int) -> np.ndarray:
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(lo, mid):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(mid, hi):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


_FB_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def mfcc(signal: np.ndarray, rate: int = 16000, numcep: int = 13) -> np.ndarray:
    """13 MFCCs per 10 ms (25 ms rectangular window, 26 mel filters, 512-point FFT,
    pre-emphasis 0.97, lifter 22, c0 replaced by log frame energy) -> (frames, numcep).

    Same numbers as ``python_speech_features.mfcc(signal, rate)``, which Light-ASD was
    trained with; ``signal`` is expected at int16 scale as TalkNet reads its wav files.
    """
    sig = np.asarray(signal, dtype=np.float64).ravel()
    sig = np.append(sig[:1], sig[1:] - 0.97 * sig[:-1]) if sig.size else sig
    flen, step, nfft = int(round(0.025 * rate)), int(round(0.010 * rate)), 512
    n = 1 if sig.size <= flen else 1 + int(math.ceil((sig.size - flen) / step))
    padded = np.concatenate([sig, np.zeros((n - 1) * step + flen - sig.size)])
    idx = np.arange(flen)[None, :] + step * np.arange(n)[:, None]
    frames = padded[idx]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    key = (26, nfft, rate)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = _mel_filterbank(26, nfft, rate)
    feat = pspec @ _FB_CACHE[key].T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    cep *= 1 + 11.0 * np.sin(np.pi * np.arange(numcep) / 22.0)  # lifter L=22
    cep[:, 0] = np.log(energy)
    return cep


# ---------------------------------------------------------------------------------------
# Face crops
# ---------------------------------------------------------------------------------------
def smooth_track_boxes(boxes: np.ndarray, kernel: int = 13) -> np.ndarray:
    """TalkNet's crop geometry per frame: (centre x, centre y, half size) median-filtered."""
    from scipy.signal import medfilt

    b = np.asarray(boxes, dtype=np.float64)
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    k = min(kernel, len(b) if len(b) % 2 else len(b) - 1)
    if k >= 3:
        s, cx, cy = medfilt(s, k), medfilt(cx, k), medfilt(cy, k)
    return np.stack([cx, cy, s], axis=1)


def crop_face(gray: np.ndarray, cx: float, cy: float, s: float, crop_scale: float = 0.4) -> np.ndarray:
    """One 112x112 grayscale crop as TalkNet makes it: pad with grey 110, take the box
    enlarged by ``crop_scale`` (more room below the chin), resize to 224, keep the centre."""
    bsi = int(s * (1 + 2 * crop_scale))
    padded = np.pad(gray, ((bsi, bsi), (bsi, bsi)), mode="constant", constant_values=110)
    my, mx = cy + bsi, cx + bsi
    face = padded[int(my - s): int(my + s * (1 + 2 * crop_scale)),
                  int(mx - s * (1 + crop_scale)): int(mx + s * (1 + crop_scale))]
    if face.size == 0:
        return np.full((CROP_SIZE, CROP_SIZE), 110, dtype=np.uint8)
    face = cv2.resize(face, (224, 224))
    lo = 112 - CROP_SIZE // 2
    return face[lo: lo + CROP_SIZE, lo: lo + CROP_SIZE]


# ---------------------------------------------------------------------------------------
# Light-ASD network (module names and shapes match the official state dict)
# ---------------------------------------------------------------------------------------
def _bn2(c):
    return nn.BatchNorm2d(c, momentum=0.01, eps=0.001)


def _bn3(c):
    return nn.BatchNorm3d(c, momentum=0.01, eps=0.001)


class _AudioBlock(nn.Module):
    """Two branches (3- and 5-wide): a conv across MFCC bins then one across time, summed."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.m_3, self.bn_m_3 = nn.Conv2d(cin, cout, (3, 1), padding=(1, 0), bias=False), _bn2(cout)
        self.t_3, self.bn_t_3 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 1), bias=False), _bn2(cout)
        self.m_5, self.bn_m_5 = nn.Conv2d(cin, cout, (5, 1), padding=(2, 0), bias=False), _bn2(cout)
        self.t_5, self.bn_t_5 = nn.Conv2d(cout, cout, (1, 5), padding=(0, 2), bias=False), _bn2(cout)
        self.last, self.bn_last = nn.Conv2d(cout, cout, 1, bias=False), _bn2(cout)

    def forward(self, x):
        a = F.relu(self.bn_t_3(self.t_3(F.relu(self.bn_m_3(self.m_3(x))))))
        b = F.relu(self.bn_t_5(self.t_5(F.relu(self.bn_m_5(self.m_5(x))))))
        return F.relu(self.bn_last(self.last(a + b)))


def _fold(conv, bn) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return weight.contiguous(), (bn.bias - bn.running_mean * scale).contiguous()


class _VisualBlock(nn.Module):
    """Spatial conv then temporal conv, in 3- and 5-wide branches, summed (a (2+1)D block)."""

    def __init__(self, cin: int, cout: int, downsample: bool = False):
        super().__init__()
        st = (1, 2, 2) if downsample else (1, 1, 1)
        self.s_3, self.bn_s_3 = nn.Conv3d(cin, cout, (1, 3, 3), stride=st, padding=(0, 1, 1), bias=False), _bn3(cout)
        self.t_3, self.bn_t_3 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False), _bn3(cout)
        self.s_5, self.bn_s_5 = nn.Conv3d(cin, cout, (1, 5, 5), stride=st, padding=(0, 2, 2), bias=False), _bn3(cout)
        self.t_5, self.bn_t_5 = nn.Conv3d(cout, cout, (5, 1, 1), padding=(2, 0, 0), bias=False), _bn3(cout)
        self.last, self.bn_last = nn.Conv3d(cout, cout, 1, bias=False), _bn3(cout)

    # The 3-D convolutions are separable by construction, so they run as 2-D convolutions
    # (frames folded into the batch for the spatial ones, pixels into the width for the
    # temporal ones): the same arithmetic, several times faster than Conv3d on CPU.
    @staticmethod
    def _spatial(conv: nn.Conv3d, x, weight=None, bias=None):
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w)
        w2 = (conv.weight if weight is None else weight)[:, :, 0]
        y = F.conv2d(y, w2, bias, stride=conv.stride[1:], padding=conv.padding[1:])
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)

    @staticmethod
    def _temporal(conv: nn.Conv3d, x, weight=None, bias=None):
        b, c, t, h, w = x.shape
        w2 = (conv.weight if weight is None else weight)[:, :, :, 0]
        y = F.conv2d(x.reshape(b, c, t, h * w), w2, bias, padding=(conv.padding[0], 0))
        return y.reshape(b, -1, t, h, w)

    def fold_batchnorm(self) -> None:
        """For inference: each conv + its BatchNorm as one conv with a bias (the same affine
        map, one pass over the activations fewer). Kept beside the parameters, so the state
        dict stays the official one; ``forward`` uses them outside training."""
        with torch.no_grad():
            self._folded = {n: _fold(getattr(self, n), getattr(self, "bn_" + n)) for n in ("s_3", "t_3", "s_5", "t_5", "last")}

    def _forward_folded(self, x):
        f = self._folded
        a = self._spatial(self.s_3, x, *f["s_3"]).relu_()
        a = self._temporal(self.t_3, a, *f["t_3"]).relu_()
        b = self._spatial(self.s_5, x, *f["s_5"]).relu_()
        b = self._temporal(self.t_5, b, *f["t_5"]).relu_()
        return self._temporal(self.last, a.add_(b), *f["last"]).relu_()

    def forward(self, x):
        if getattr(self, "_folded", None) and not self.training:
            return self._forward_folded(x)
        a = F.relu(self.bn_s_3(self._spatial(self.s_3, x)))
        a = F.relu(self.bn_t_3(self._temporal(self.t_3, a)))
        b = F.relu(self.bn_s_5(self._spatial(self.s_5, x)))
        b = F.relu(self.bn_t_5(self._temporal(self.t_5, b)))
        return F.relu(self.bn_last(self._temporal(self.last, a + b)))


class _VisualEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = _VisualBlock(1, 32, downsample=True)
        self.block2 = _VisualBlock(32, 64)
        self.block3 = _VisualBlock(64, 128)

    @staticmethod
    def _pool(x):  # 3x3/2 spatial max-pool, time untouched (as 2-D: the same, faster on CPU)
        b, c, t, h, w = x.shape
        y = F.max_pool2d(x.reshape(b, c * t, h, w), 3, stride=2, padding=1)
        return y.reshape(b, c, t, *y.shape[2:])

    def forward(self, x):  # (B, 1, T, H, W) -> (B, T, 128)
        x = self.block3(self._pool(self.block2(self._pool(self.block1(x)))))
        return x.amax(dim=(3, 4)).transpose(1, 2)


class _AudioEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = _AudioBlock(1, 32)
        self.block2 = _AudioBlock(32, 64)
        self.block3 = _AudioBlock(64, 128)

    @staticmethod
    def _pool(x):  # halves the time axis: 4 MFCC frames per video frame -> 1
        return F.max_pool2d(x, (1, 3), stride=(1, 2), padding=(0, 1))

    def forward(self, x):  # (B, 1, 13, 4T) -> (B, T, 128)
        x = self.block3(self._pool(self.block2(self._pool(self.block1(x)))))
        return x.mean(dim=2).transpose(1, 2)


class _BiGRU(nn.Module):
    """Two unidirectional GRUs, the second run on the time-reversed output of the first."""

    def __init__(self, ch: int = 128):
        super().__init__()
        self.gru_forward = nn.GRU(ch, ch, num_layers=1, batch_first=True)
        self.gru_backward = nn.GRU(ch, ch, num_layers=1, batch_first=True)

    def forward(self, x):
        x = F.gelu(self.gru_forward(x)[0])
        x = torch.flip(self.gru_backward(torch.flip(x, dims=[1]))[0], dims=[1])
        return F.gelu(x)


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.visualEncoder = _VisualEncoder()
        self.audioEncoder = _AudioEncoder()
        self.GRU = _BiGRU(128)


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.FC = nn.Linear(128, 2)


class LightASD(nn.Module):
    """Light-ASD with the official weights' layout: ``model`` (encoders + GRU) and two heads."""

    def __init__(self):
        super().__init__()
        self.model = _Backbone()
        self.lossAV = _Head()
        self.lossV = _Head()

    # The visual encoder sees +-6 frames (three blocks, each at most a 5-wide temporal conv
    # followed by a 1-wide one): run over time in windows of this many frames plus that halo,
    # it computes exactly the same features while its activations (the memory peak: ~1 GB per
    # 5 s of two tracks) stay bounded however long a segment is.
    VISUAL_WINDOW = 125
    VISUAL_HALO = 6

    def _visual(self, faces: torch.Tensor) -> torch.Tensor:
        t = faces.shape[1]
        w, halo = self.VISUAL_WINDOW, self.VISUAL_HALO
        out = []
        for start in range(0, t, w):
            lo, hi = max(0, start - halo), min(t, start + w + halo)
            v = faces[:, lo:hi].float().unsqueeze(1)
            y = self.model.visualEncoder((v / 255.0 - 0.4161) / 0.1688)
            out.append(y[:, start - lo: start - lo + min(w, t - start)])
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)

    def forward(self, mfcc_feats: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """``mfcc_feats`` (B, 4T, 13) float, ``faces`` (B, T, 112, 112) uint8/float in 0..255
        -> speaking logits (B, T)."""
        v = self._visual(faces)
        a = self.model.audioEncoder(mfcc_feats.float().unsqueeze(1).transpose(2, 3))
        x = self.model.GRU(a + v)
        logits = self.lossAV.FC(x)
        return logits[..., 1]


def resolve_local_weights(models_dir: str | Path, rel: str) -> Path:
    """A weights file the registry does not know: ``rel`` under the models dir (or absolute)."""
    path = Path(rel) if Path(rel).is_absolute() else Path(models_dir) / rel
    if not path.is_file():
        raise ModelMissingError(
            f"ASD weights {path.name} not found in {path.parent}; put the file there, fix [asd] weights, "
            "or set [asd] model = \"sync\" (no weights)"
        )
    return path


def load_light_asd(path: str | Path, device: str = "cpu") -> LightASD:
    """Build Light-ASD and load the official state dict strictly (every key, every shape)."""
    path = resolve_local_weights(Path(path).parent, Path(path).name)
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net = LightASD()
    net.load_state_dict(state, strict=True)
    net = net.to(device).eval()
    for block in (net.model.visualEncoder.block1, net.model.visualEncoder.block2, net.model.visualEncoder.block3):
        block.fold_batchnorm()
    return net


PROTOCOLS = ("one-pass", "multi-length")


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``[asd] precision``: "auto" is bfloat16 on a CPU that computes it natively (AVX-512
    BF16 or AMX; oneDNN then runs the convolutions about 2x faster than float32), float32
    elsewhere (GPUs, older CPUs where bf16 is emulated and slower)."""
    if precision in ("bf16", "fp32"):
        return precision
    if precision != "auto":
        raise ModelMissingError(f"[asd] precision = {precision!r}: use auto, bf16 or fp32")
    if not str(device).startswith("cpu"):
        return "fp32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return "fp32"


def _autocast(precision: str, device: str):
    import contextlib

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)


def _fit_feats(feats: np.ndarray, t: int) -> np.ndarray:
    """MFCCs for exactly t video frames (4 per frame); the last frame's audio can run past
    the file end, so a short tail repeats the last row."""
    feats = np.asarray(feats, dtype=np.float32)
    if len(feats) < MFCC_PER_FRAME * t:
        pad = np.repeat(feats[-1:], MFCC_PER_FRAME * t - len(feats), axis=0) if len(feats) else np.zeros((MFCC_PER_FRAME * t, 13), np.float32)
        feats = np.concatenate([feats, pad]) if len(feats) else pad
    return feats[: MFCC_PER_FRAME * t]


@torch.inference_mode()
def score_tracks(net, tracks: list[tuple[np.ndarray, np.ndarray]], *, protocol: str = "one-pass",
                 precision: str = "fp32", device: str = "cpu") -> list[np.ndarray]:
    """Per-frame speaking logits for each ``(faces (T, 112, 112) uint8, MFCC (>= 4T, 13))``.

    ``one-pass``: each track through the network once, tracks of equal length as one batch
    (the tracks of one segment usually are). ``multi-length``: the official 1..6 s chunk
    average (:func:`multi_length_scores`), 3-6x the work for the same decisions on our test
    clips. ``precision`` "bf16" runs under autocast (see :func:`resolve_precision`).
    """
    out: list[np.ndarray | None] = [None] * len(tracks)
    with _autocast(precision, device):
        if protocol == "multi-length":
            return [multi_length_scores(net, f, a, device) for f, a in tracks]
        if protocol != "one-pass":
            raise ModelMissingError(f"[asd] protocol = {protocol!r}: use {' or '.join(PROTOCOLS)}")
        by_len: dict[int, list[int]] = {}
        for i, (f, _) in enumerate(tracks):
            by_len.setdefault(len(f), []).append(i)
        for t, idx in by_len.items():
            v = torch.from_numpy(np.stack([np.ascontiguousarray(tracks[i][0]) for i in idx])).to(device)
            a = torch.from_numpy(np.stack([_fit_feats(tracks[i][1], t) for i in idx])).to(device)
            logits = net(a, v).float().cpu().numpy()
            for j, i in enumerate(idx):
                out[i] = logits[j].astype(np.float64)
    return out


@torch.inference_mode()
def multi_length_scores(net, faces: np.ndarray, feats: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Per-frame speaking logits for one track from Light-ASD or TalkNet (any ``net(mfcc
    (B, 4T, 13), faces (B, T, 112, 112)) -> (B, T)`` that scores each batch item on its own):
    ``faces`` (T, 112, 112) uint8 at 25 fps, ``feats`` MFCC (>= 4T, 13) starting at the first
    face's time. Averages the official multi-length evaluation (chunks of 1..6 s)."""
    t = len(faces)
    feats = _fit_feats(feats, t)
    v_all = torch.from_numpy(np.ascontiguousarray(faces)).to(device)
    a_all = torch.from_numpy(feats).to(device)
    total = np.zeros(t, dtype=np.float64)
    weight = 0
    for dur, w in DURATION_WEIGHTS.items():
        n = dur * VIDEO_FPS
        full = t // n
        out = []
        if full:  # equal-length chunks go through as one batch (each is scored independently)
            v = v_all[: full * n].reshape(full, n, *v_all.shape[1:])
            a = a_all[: full * n * MFCC_PER_FRAME].reshape(full, n * MFCC_PER_FRAME, -1)
            out.append(net(a, v).reshape(-1).float().cpu().numpy())
        if full * n < t:
            out.append(net(a_all[full * n * MFCC_PER_FRAME:][None], v_all[full * n:][None])[0].float().cpu().numpy())
        scores = np.concatenate(out)
        if n >= t:  # this and every longer length see the whole track as one chunk: same result
            w = sum(ww for d, ww in DURATION_WEIGHTS.items() if d >= dur)
        total += w * scores
        weight += w
        if n >= t:
            break
    return total / weight


# ---------------------------------------------------------------------------------------
# AV-sync fallback (no weights)
# ---------------------------------------------------------------------------------------
# Mouth region of the 112x112 TalkNet crop: the face centre sits near row 24 and the chin
# near row 104, so the mouth spans roughly rows 60..100 across the middle of the crop.
MOUTH_ROWS = slice(60, 100)
MOUTH_COLS = slice(28, 84)
# A sync score is the correlation's Fisher z statistic minus this, so that, like a Light-ASD
# logit, > 0 means "speaking" (here: correlated beyond one-sided p ~ 0.02).
SYNC_Z_OFFSET = 2.0


def audio_envelope_change(samples: np.ndarray, rate: int, n_frames: int, fps: float = VIDEO_FPS) -> np.ndarray:
    """|delta RMS| of the audio per video frame (window = one frame), length ``n_frames``."""
    hop = rate / fps
    rms = np.zeros(n_frames)
    x = np.asarray(samples, dtype=np.float64)
    for k in range(n_frames):
        seg = x[int(round(k * hop)): int(round((k + 1) * hop))]
        rms[k] = math.sqrt(float(np.mean(seg**2))) if seg.size else 0.0
    return np.abs(np.diff(rms, prepend=rms[:1]))


def mouth_motion(faces: np.ndarray) -> np.ndarray:
    """Mean absolute frame difference in the mouth region of each crop, length T."""
    m = np.asarray(faces, dtype=np.float32)[:, MOUTH_ROWS, MOUTH_COLS]
    d = np.abs(np.diff(m, axis=0)).mean(axis=(1, 2))
    return np.concatenate([[0.0], d])


def sync_correlation(faces: np.ndarray, samples: np.ndarray, rate: int) -> float:
    """Pearson correlation of mouth motion with audio envelope change (0 when undefined)."""
    motion = mouth_motion(faces)
    env = audio_envelope_change(samples, rate, len(faces))
    if len(motion) < 3 or motion.std() == 0 or env.std() == 0:
        return 0.0
    return float(np.corrcoef(motion, env)[0, 1])


def sync_score(faces: np.ndarray, samples: np.ndarray, rate: int) -> float:
    """Track score on Light-ASD's sign convention: Fisher z of the correlation minus 2."""
    r = max(min(sync_correlation(faces, samples, rate), 0.999), -0.999)
    n = len(faces)
    return float(math.atanh(r) * math.sqrt(max(n - 3, 1)) - SYNC_Z_OFFSET)


# ---------------------------------------------------------------------------------------
# TalkNet (user-supplied weights)
# ---------------------------------------------------------------------------------------
def load_talknet(path: str | Path, device: str = "cpu"):
    """TalkNet-ASD with a released file, loaded strictly. The model manager resolves the path
    (``talknet/pretrain_TalkSet.model``; the AVA-trained ``pretrain_AVA.model`` has the same
    layout and may be placed under that name) and says where it goes when absent. A file that
    is not a TalkNet checkpoint stops the stage with one line naming it and the fix."""
    from . import talknet

    path = resolve_local_weights(Path(path).parent, Path(path).name)
    return talknet.load(path, device)
