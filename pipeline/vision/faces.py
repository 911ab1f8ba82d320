"""Face detectors (S3FD, UltraFace, Haar) and the face tracker.

Every detector maps a list of RGB uint8 images to one float array per image of shape (N, 5):
``x1, y1, x2, y2, score`` in that image's pixels. The tracker turns per-frame detections on
the frame grid (see ``frames.py``) into tracks: lists of boxes, one per grid frame.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..stage import ModelMissingError
from .tracks import box_iou

log = logging.getLogger(__name__)

S3FD_FILE = "s3fd-619a316812.pth"


# ---------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------
def nms(dets: np.ndarray, iou: float = 0.3) -> np.ndarray:
    """Greedy non-maximum suppression on (N, 5) boxes, highest score first."""
    if not len(dets):
        return dets.reshape(0, 5)
    order = np.argsort(-dets[:, 4])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        ov = box_iou(dets[i: i + 1], dets[order[1:]])[0]
        order = order[1:][ov <= iou]
    return dets[keep]


class Detector:
    name = ""
    batch_size = 1

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError


class HaarDetector(Detector):
    """OpenCV's frontal-face cascade. It has no confidence: every detection scores 1.0."""

    name = "haar"

    def __init__(self, min_size: int = 24):
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ModelMissingError(f"OpenCV Haar cascade not found at {path}; reinstall opencv-python<5")
        self.min_size = min_size

    def detect(self, images):
        out = []
        for img in images:
            gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
            found = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size))
            d = np.array([[x, y, x + w, y + h, 1.0] for x, y, w, h in found], dtype=np.float32).reshape(-1, 5)
            out.append(d)
        return out


class UltraFaceDetector(Detector):
    """Ultra-Light-Fast RFB detector (ONNX, box decoding inside the graph) on onnxruntime.

    Input: the frame resized to the model size (320x240 or 640x480), RGB, (x-127)/128.
    Outputs: scores (1, N, 2) and normalised boxes (1, N, 4); NMS is ours.
    """

    name = "ultraface"

    def __init__(self, onnx_path: str | Path, *, min_score: float = 0.7, threads: int = 1):
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.is_file():
            raise ModelMissingError(f"UltraFace model {path.name} not found in {path.parent}; run: mikupal models download ultraface")
        so = ort.SessionOptions()
        so.log_severity_level = 3  # the official export lists initializers as inputs: harmless
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        _, _, h, w = self.session.get_inputs()[0].shape
        self.size = (int(w), int(h))
        self.min_score = min_score

    def detect(self, images):
        out = []
        for img in images:
            h, w = img.shape[:2]
            # resize, (x-127)/128 and HWC->NCHW in one OpenCV call (a third of numpy's time)
            x = cv2.dnn.blobFromImage(img, 1 / 128.0, self.size, (127.0, 127.0, 127.0))
            scores, boxes = self.session.run(None, {"input": x})
            s = scores[0, :, 1]
            m = s > self.min_score
            d = np.concatenate([boxes[0][m] * [w, h, w, h], s[m, None]], axis=1).astype(np.float32)
            out.append(nms(d, 0.3))
        return out


class S3FDDetector(Detector):
    """face-alignment's S3FD (``SFDDetector``) run on batches of frames."""

    name = "s3fd"
    batch_size = 8

    def __init__(self, weights: str | Path, *, device: str = "cpu", min_score: float = 0.7):
        import torch
        from face_alignment.detection.sfd.sfd_detector import SFDDetector

        path = Path(weights)
        if not path.is_file():
            raise ModelMissingError(f"S3FD weights {path.name} not found in {path.parent}; run: mikupal models download s3fd")
        self.torch = torch
        self.device = device
        self.net = SFDDetector(device, path_to_detector=str(path), filter_threshold=min_score)

    def detect(self, images):
        out: list[np.ndarray] = []
        # Frames of one video share a size; group by size anyway so mixed input is safe.
        for i in range(0, len(images), self.batch_size):
            chunk = images[i: i + self.batch_size]
            if len({im.shape for im in chunk}) > 1:
                for im in chunk:
                    out.extend(self._run([im]))
            else:
                out.extend(self._run(chunk))
        return out

    def _run(self, chunk):
        t = self.torch.from_numpy(np.ascontiguousarray(np.stack(chunk).transpose(0, 3, 1, 2))).float()
        res = self.net.detect_from_batch(t.to(self.device))
        return [np.asarray(r, dtype=np.float32).reshape(-1, 5) for r in res]


def s3fd_weights(cfg: dict) -> Path:
    """S3FD weights: face-alignment's own torch-hub cache when it has them, else the models
    dir through the model manager (download with progress, or a clear error)."""
    import torch.hub

    from .. import models

    hub = Path(torch.hub.get_dir()) / "checkpoints" / S3FD_FILE
    return hub if hub.is_file() else models.ensure("s3fd", cfg)


def make_detector(name: str, cfg: dict, *, device: str = "cpu", threads: int | None = None) -> tuple[Detector, list[str]]:
    """Build the ``[faces] detector``; returns it and any warnings (kept in the stage info).

    ``auto`` = S3FD on a GPU, else UltraFace; if that model cannot be had (no file, no
    download) it falls back along S3FD -> UltraFace -> Haar and says so in the warnings, so a
    fresh offline install still finds faces. A detector named explicitly never falls back:
    missing weights raise ModelMissingError naming the file and folder. UltraFace runs its
    RFB-640 model when frames are >= 480 px wide after downscaling, else RFB-320. ``threads``:
    the runner's CPU thread budget for this worker (UltraFace; S3FD on CPU uses torch's).
    """
    from .. import models

    c = cfg["faces"]
    min_score = float(c["min_score"])
    variant = 640 if int(c["detect_width"]) >= 480 else 320
    builders = {
        "s3fd": lambda: S3FDDetector(s3fd_weights(cfg), device=device, min_score=min_score),
        "ultraface": lambda: UltraFaceDetector(models.ensure("ultraface", cfg) / f"version-RFB-{variant}.onnx",
                                               min_score=min_score, threads=threads or 1),
        "haar": lambda: HaarDetector(),
    }
    if name != "auto":
        if name not in builders:
            raise ModelMissingError(f"[faces] detector = {name!r}: use s3fd, ultraface, haar or auto")
        return builders[name](), []
    chain = (["s3fd"] if str(device).startswith("cuda") else []) + ["ultraface", "haar"]
    warnings: list[str] = []
    for cand in chain:
        try:
            return builders[cand](), warnings
        except ModelMissingError as e:
            warnings.append(f"face detector {cand} unavailable, falling back: {e}")
            log.warning(warnings[-1])
    raise AssertionError("haar needs no weights")  # pragma: no cover


# ---------------------------------------------------------------------------------------
# Scene cuts
# ---------------------------------------------------------------------------------------
def frame_histogram(rgb: np.ndarray) -> np.ndarray:
    """Normalised hue-saturation histogram of a small copy of the frame."""
    small = cv2.resize(rgb, (64, max(1, int(64 * rgb.shape[0] / max(rgb.shape[1], 1)))), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    h = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(h, h).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance in [0, 1]: 0 same colours, 1 disjoint."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


# ---------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------
@dataclass
class Track:
    """One face over consecutive grid frames. ``boxes`` (n, 4) x1,y1,x2,y2; ``detected``
    marks frames with a real detection (the others were interpolated)."""

    frames: np.ndarray
    boxes: np.ndarray
    detected: np.ndarray
    scores: np.ndarray

    @property
    def start(self) -> int:
        return int(self.frames[0])

    @property
    def end(self) -> int:
        return int(self.frames[-1])


def _median_smooth(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(x) < 2:
        return x
    from scipy.ndimage import median_filter

    return median_filter(x, size=window, mode="nearest")


def _finish(obs: list[tuple[int, np.ndarray]], min_frames: int, smooth: int) -> Track | None:
    if len(obs) < min_frames:
        return None
    idx = np.array([k for k, _ in obs])
    det = np.stack([d for _, d in obs]).astype(np.float64)
    frames = np.arange(idx[0], idx[-1] + 1)
    # Interpolate missed frames in centre/size space, then median-smooth the same four.
    c = np.stack([(det[:, 0] + det[:, 2]) / 2, (det[:, 1] + det[:, 3]) / 2,
                  det[:, 2] - det[:, 0], det[:, 3] - det[:, 1]], axis=1)
    ci = np.stack([np.interp(frames, idx, c[:, j]) for j in range(4)], axis=1)
    ci = np.stack([_median_smooth(ci[:, j], smooth) for j in range(4)], axis=1)
    boxes = np.stack([ci[:, 0] - ci[:, 2] / 2, ci[:, 1] - ci[:, 3] / 2,
                      ci[:, 0] + ci[:, 2] / 2, ci[:, 1] + ci[:, 3] / 2], axis=1)
    detected = np.isin(frames, idx)
    scores = np.interp(frames, idx, det[:, 4])
    return Track(frames=frames, boxes=boxes, detected=detected, scores=scores)


def track_faces(
    detections: list[tuple[int, np.ndarray]],
    *,
    cuts: set[int] | frozenset = frozenset(),
    iou_threshold: float = 0.3,
    max_gap: int = 10,
    min_frames: int = 10,
    smooth: int = 5,
) -> list[Track]:
    """Link per-frame detections ``[(frame index, (N, 5) boxes), ...]`` (sorted by index)
    into tracks.

    A detection continues the active track whose last box overlaps it most (IoU >=
    ``iou_threshold``, one-to-one, best pairs first); a track not matched for more than
    ``max_gap`` frames ends; a frame index in ``cuts`` (first frame of a new shot) or a hole
    in the grid longer than ``max_gap`` ends every track. Tracks with fewer than
    ``min_frames`` detections are dropped; missed frames are interpolated and box centre and
    size are median-smoothed over ``smooth`` frames.
    """
    active: list[dict] = []  # {"obs": [(k, det)], "last": k}
    done: list[list[tuple[int, np.ndarray]]] = []
    prev_k = None
    for k, dets in detections:
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
        if k in cuts or (prev_k is not None and k - prev_k > max_gap + 1):
            done.extend(t["obs"] for t in active)
            active = []
        prev_k = k
        done.extend(t["obs"] for t in active if k - t["last"] > max_gap + 1)
        active = [t for t in active if k - t["last"] <= max_gap + 1]
        used = set()
        if active and len(dets):
            iou = box_iou(np.stack([t["obs"][-1][1] for t in active]), dets)
            for flat in np.argsort(-iou, axis=None):
                ti, di = np.unravel_index(flat, iou.shape)
                if iou[ti, di] < iou_threshold:
                    break
                if ti in used or ("d", di) in used:
                    continue
                used.add(ti)
                used.add(("d", di))
                active[ti]["obs"].append((k, dets[di]))
                active[ti]["last"] = k
        for di in range(len(dets)):
            if ("d", di) not in used:
                active.append({"obs": [(k, dets[di])], "last": k})
    done.extend(t["obs"] for t in active)
    tracks = [t for t in (_finish(o, min_frames, smooth) for o in done) if t is not None]
    tracks.sort(key=lambda t: (t.start, float(t.boxes[0, 0])))
    return tracks
