"""The model manager: every model the pipeline can use, where its files live, how to get them.

One registry, one resolver. A stage asks `ensure(model_id, cfg)` for a local path:
the file is looked up in the models dir (MIKUPAL_MODELS_DIR > [models] dir > user cache);
when missing and downloads are allowed it is fetched from its upstream URL with a progress
bar and checked against its sha256; otherwise ModelMissingError says which file to put where.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .fileutil import sha256_file
from .project import models_dir as _models_dir
from .project import models_dir_and_origin as _models_dir_and_origin
from .stage import ModelMissingError

HF = "https://huggingface.co"
UVR = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models"

# audio-separator resolves a separation model through three JSON files beside the weights:
# the model list and the parameters keyed by the weights' MD5. They change upstream, so they
# are not pinned. mikupal.audio.separate imports these (this module stays cheap to import).
SEPARATOR_SUBDIR = "audio-separator"
_UVR_DATA = "https://raw.githubusercontent.com/TRvlvr/application_data/main"
SEPARATOR_METADATA_URLS = {
    "download_checks.json": f"{_UVR_DATA}/filelists/download_checks.json",
    "mdx_model_data.json": f"{_UVR_DATA}/mdx_model_data/model_data_new.json",
    "vr_model_data.json": f"{_UVR_DATA}/vr_model_data/model_data_new.json",
}


@dataclass(frozen=True)
class ModelFile:
    relpath: str  # inside the models dir
    url: str | None  # None: the user must supply it
    sha256: str | None = None  # full digest when pinned
    sha256_prefix: str | None = None  # torch-hub style prefix in the file name
    size_mb: float | None = None


@dataclass(frozen=True)
class Model:
    id: str
    stage: str
    description: str
    licence: str
    source: str
    files: tuple[ModelFile, ...] = field(default_factory=tuple)

    @property
    def size_mb(self) -> float:
        return sum(f.size_mb or 0 for f in self.files)


def _whisper(size: str, mb: float) -> Model:
    repo = f"Systran/faster-whisper-{size}"
    names = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json" if size != "large-v3" else "vocabulary.json",
             "preprocessor_config.json")
    files = tuple(
        ModelFile(f"whisper/faster-whisper-{size}/{n}", f"{HF}/{repo}/resolve/main/{n}", size_mb=mb if n == "model.bin" else 0.5)
        for n in dict.fromkeys(names)
    )
    return Model(f"whisper-{size}", "asr", f"Whisper {size} in CTranslate2 format (faster-whisper)", "MIT",
                 f"{HF}/{repo}", files)


def _mdx(name: str, description: str, mb: float) -> Model:
    """An MDX-Net model for audio-separator: the weights plus the metadata files it reads."""
    weights = ModelFile(f"{SEPARATOR_SUBDIR}/{name}", f"{UVR}/{name}", size_mb=mb)
    meta = tuple(ModelFile(f"{SEPARATOR_SUBDIR}/{n}", url) for n, url in SEPARATOR_METADATA_URLS.items())
    return Model(name, "separate", description, "MIT (UVR models)", UVR, (weights, *meta))


REGISTRY: dict[str, Model] = {
    m.id: m
    for m in [
        _mdx("UVR-MDX-NET-Inst_HQ_3.onnx", "MDX-Net vocal/instrumental separation (UVR, default)", 63.7),
        _mdx("UVR_MDXNET_KARA_2.onnx", "MDX-Net karaoke model (lighter vocals)", 50.3),
        _mdx("Kim_Vocal_2.onnx", "MDX-Net vocal model by Kim", 63.7),
        _whisper("tiny", 75), _whisper("base", 145), _whisper("small", 484), _whisper("medium", 1530),
        _whisper("large-v3", 3090),
        Model("s3fd", "faces", "S3FD face detector (face-alignment)", "BSD-3-Clause (face-alignment)",
              "https://github.com/1adrianb/face-alignment",
              (ModelFile("s3fd/s3fd-619a316812.pth", "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
                         sha256_prefix="619a316812", size_mb=85.7),)),
        Model("ultraface", "faces", "UltraFace RFB-320/640 ONNX (fast CPU face detector)", "MIT",
              "https://github.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB",
              (ModelFile("ultraface/version-RFB-320.onnx",
                         "https://raw.githubusercontent.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB/dffdddda/models/onnx/version-RFB-320.onnx",
                         sha256="34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017", size_mb=1.2),
               ModelFile("ultraface/version-RFB-640.onnx",
                         "https://raw.githubusercontent.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB/dffdddda/models/onnx/version-RFB-640.onnx",
                         sha256="8f4c659275977e7a3bfbfa339a9c769ad793df50f9c0baa8c14b11baa1646430", size_mb=1.5))),
        Model("light-asd", "asd", "Light-ASD active speaker detector (TalkSet fine-tuned)", "MIT",
              "https://github.com/Junhua-Liao/Light-ASD",
              (ModelFile("light-asd/finetuning_TalkSet.model",
                         "https://raw.githubusercontent.com/Junhua-Liao/Light-ASD/ed38c232/weight/finetuning_TalkSet.model",
                         sha256="efc375833887eefa9d209dc92810e18519b04c3c73ea35a549f2a7f40b7d94d5", size_mb=4.0),)),
        Model("light-asd-ava", "asd", "Light-ASD pretrained on AVA-ActiveSpeaker", "MIT",
              "https://github.com/Junhua-Liao/Light-ASD",
              (ModelFile("light-asd/pretrain_AVA_CVPR.model",
                         "https://raw.githubusercontent.com/Junhua-Liao/Light-ASD/ed38c232/weight/pretrain_AVA_CVPR.model",
                         sha256="d44bc3ea7baa8e0946fa3921311714a630ed8b90a1928fab0dbe30d918909317", size_mb=4.0),)),
        Model("talknet", "asd", "TalkNet-ASD (weights are shared via Google Drive: download by hand)", "MIT",
              "https://github.com/TaoRuijie/TalkNet-ASD",
              (ModelFile("talknet/pretrain_TalkSet.model", None, size_mb=60.0),)),
    ]
}


def models_dir(cfg: dict | None = None) -> Path:
    return _models_dir(cfg)


def models_dir_origin(cfg: dict | None = None) -> str:
    """Why models_dir(cfg) is where it is, in words."""
    return _models_dir_and_origin(cfg)[1]


def file_status(f: ModelFile, root: Path) -> str:
    """"present", "missing" or "bad checksum"."""
    p = root / f.relpath
    if not p.is_file() or p.stat().st_size == 0:
        return "missing"
    if f.sha256 and sha256_file(p) != f.sha256:
        return "bad checksum"
    return "present"


def model_status(model: Model, root: Path) -> str:
    """"present" when every file is, "bad checksum" when any file fails its digest, else "missing"."""
    st = {file_status(f, root) for f in model.files}
    return "present" if st == {"present"} else ("bad checksum" if "bad checksum" in st else "missing")


def missing_message(model: Model, root: Path, files: list[ModelFile] | None = None, why: str | None = None) -> str:
    """One line: which files of `model` to place where (and, after a failed download, why it failed)."""
    files = files if files is not None else [f for f in model.files if file_status(f, root) != "present"]
    parts = []
    for f in files:
        where = root / f.relpath
        parts.append(f"{where}" + (f" (from {f.url})" if f.url else f" (get it from {model.source})"))
    head = f"model {model.id} could not be downloaded ({why})" if why else f"model {model.id} is missing"
    return f"{head}: place " + "; ".join(parts) + " — or run: mikupal models download " + model.id


class DownloadError(ModelMissingError):
    """A download failed; `reason` is the short why (HTTP error, offline, checksum mismatch)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def download_file(f: ModelFile, root: Path, progress: Callable[[int, int | None], None] | None = None,
                  timeout: float = 30.0) -> Path:
    """Fetch one file into the models dir atomically, checking its digest."""
    if f.url is None:
        raise DownloadError(f"{f.relpath} has no public URL; download it by hand into {root / f.relpath}", "no public URL")
    dest = root / f.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(f.url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                out.write(block)
                h.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
        if total is not None and done != total:  # the server closed early: not a whole file
            why = f"the transfer broke off after {done} of {total} bytes; try again"
            raise DownloadError(f"{f.url}: {why}", f"{f.relpath}: {why}")
        digest = h.hexdigest()
        if f.sha256 and digest != f.sha256:
            why = f"checksum mismatch (got {digest[:12]}…, want {f.sha256[:12]}…)"
            raise DownloadError(f"{f.url}: {why}; try again later", f"{f.relpath}: {why}")
        if f.sha256_prefix and not digest.startswith(f.sha256_prefix):
            why = f"checksum mismatch (got {digest[:10]}, want {f.sha256_prefix})"
            raise DownloadError(f"{f.url}: {why}; try again later", f"{f.relpath}: {why}")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
        if isinstance(e, urllib.error.HTTPError):
            reason = str(e)
        elif isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError)):
            reason = f"no connection, offline? {getattr(e, 'reason', None) or e}"
        elif isinstance(e, http.client.HTTPException):
            reason = f"the transfer broke off ({type(e).__name__}); try again"
        else:  # the disk: full, read-only, ...
            reason = str(e)
        raise DownloadError(f"cannot download {f.url} ({reason}); place the file at {dest}",
                            f"{f.relpath}: {reason}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure(model_id: str, cfg: dict | None = None, *, allow_download: bool | None = None,
           progress: Callable[[str, int, int | None], None] | None = None) -> Path:
    """Local path of a model: its file, or its folder for multi-file models."""
    model = REGISTRY.get(model_id)
    if model is None:
        raise ModelMissingError(f"unknown model {model_id!r}; see: mikupal models list")
    root = models_dir(cfg)
    if allow_download is None:
        allow_download = bool((cfg or {}).get("models", {}).get("allow_download", True))
    todo = [f for f in model.files if file_status(f, root) != "present"]
    if todo and allow_download and all(f.url for f in todo):
        for f in todo:
            cb = (lambda d, t, _n=f.relpath: progress(_n, d, t)) if progress else None
            try:
                download_file(f, root, cb)
            except DownloadError as e:
                # what is still missing now (files fetched before the failure stay)
                raise ModelMissingError(missing_message(model, root, why=e.reason)) from None
        todo = []
    if todo:
        raise ModelMissingError(missing_message(model, root, todo))
    paths = [root / f.relpath for f in model.files]
    return paths[0] if len(paths) == 1 else paths[0].parent


def required_models(cfg: dict) -> list[str]:
    """Models the current configuration will load."""
    need = []
    sep = cfg["separate"]["model"]
    if sep != "none":
        need.append(sep)
    if cfg["asr"]["source"] != "subtitles" and not Path(cfg["asr"]["model"]).exists():
        need.append(f"whisper-{cfg['asr']['model']}")
    det = cfg["faces"]["detector"]
    if det in ("s3fd", "ultraface"):
        need.append(det)
    elif det == "auto":
        need.append("ultraface")
    asd = cfg["asd"]["model"]
    if asd == "light-asd":
        need.append("light-asd-ava" if "pretrain_AVA" in cfg["asd"].get("weights", "") else "light-asd")
    elif asd == "talknet":
        need.append("talknet")
    return need
