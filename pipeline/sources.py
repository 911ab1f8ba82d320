"""Where a video came from: download a URL with yt-dlp, and read the provenance of a video
(URL, title, uploader, upload date, licence) from yt-dlp's `.info.json` sidecar.

Returns data only; `mikupal add` (ingest.add_videos) stores it in the videos table's
`source_*` columns and the CLI prints progress.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# The videos columns this module fills (migration 5; README "project.db schema").
SOURCE_COLUMNS = ("source_url", "source_id", "source_title", "source_uploader", "source_upload_date",
                  "source_license", "source_info_json")

_URL = re.compile(r"^https?://", re.IGNORECASE)

# progress(downloaded_bytes, total_bytes or None, file name)
DownloadProgress = Callable[[int, "int | None", str], None]


class SourceError(Exception):
    """A URL that could not be downloaded or a sidecar that cannot be read; one line naming it."""


def is_url(item: str | Path) -> bool:
    return isinstance(item, str) and bool(_URL.match(item.strip()))


def _date(value) -> str | None:
    """yt-dlp's YYYYMMDD as ISO YYYY-MM-DD (anything else: None)."""
    s = str(value or "")
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}" if re.fullmatch(r"\d{8}", s) else None


def _text(value) -> str | None:
    s = " ".join(str(value).split()) if value is not None else ""
    return s or None


def public_url(url) -> str | None:
    """The URL without a user:password part (credentials never reach project.db or an export)."""
    s = _text(url)
    if s is None:
        return None
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(s)
    if parts.username is None and parts.password is None:
        return s
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def provenance(info: dict, info_path: str | None = None) -> dict:
    """The source_* column values from a yt-dlp info dict (missing facts are None)."""
    extractor = info.get("extractor_key") or info.get("extractor")
    vid = info.get("id")
    return {
        "source_url": public_url(info.get("webpage_url") or info.get("original_url") or info.get("url")),
        "source_id": f"{str(extractor).lower()}:{vid}" if extractor and vid else None,
        "source_title": _text(info.get("title") or info.get("fulltitle")),
        "source_uploader": _text(info.get("uploader") or info.get("channel") or info.get("uploader_id")),
        "source_upload_date": _date(info.get("upload_date") or info.get("release_date")),
        "source_license": _text(info.get("license")),
        "source_info_json": info_path,
    }


def sidecar_for(video: Path) -> Path | None:
    """yt-dlp writes `NAME.info.json` beside `NAME.EXT`; None when there is none."""
    p = video.with_name(video.stem + ".info.json")
    return p if p.is_file() else None


def read_sidecar(path: Path) -> dict:
    """Provenance from a `.info.json`; a damaged file is a SourceError naming it."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: not a readable yt-dlp .info.json ({type(e).__name__}); "
                          "delete or re-download it") from None
    if not isinstance(info, dict):
        raise SourceError(f"{path}: not a yt-dlp .info.json (no JSON object); delete or re-download it")
    return provenance(info, str(path))


@dataclass
class Download:
    path: Path          # the media file
    info_path: Path     # its .info.json (kept beside it)
    provenance: dict


class _Log:
    """yt-dlp talks through a logger; keep its last error for the one-line message, print nothing."""

    def __init__(self):
        self.last_error = ""

    def debug(self, msg):
        pass

    info = warning = debug

    def error(self, msg):
        self.last_error = str(msg)


def _short(msg: str) -> str:
    msg = re.sub(r"\x1b\[[0-9;]*m", "", msg).replace("ERROR: ", "").strip()
    return (msg.splitlines() or [""])[0][:200]


def download(url: str, dest: Path, progress: DownloadProgress | None = None) -> Download:
    """Download one URL into `dest` with yt-dlp (resuming a partial `.part` file), keeping
    yt-dlp's `.info.json` beside the media. Raises SourceError with one line on failure."""
    try:
        import yt_dlp
    except ImportError:  # pragma: no cover - a dependency; a broken install says how to fix it
        raise SourceError(f"{url}: downloading needs yt-dlp; pip install yt-dlp") from None
    dest.mkdir(parents=True, exist_ok=True)
    log = _Log()

    def hook(d):
        if progress and d.get("status") in ("downloading", "finished"):
            total = d.get("total_bytes") or d.get("total_bytes_estimate")
            progress(int(d.get("downloaded_bytes") or 0), int(total) if total else None,
                     Path(d.get("filename") or "").name)

    opts = {
        # extractor + id: stable names, so a second `add` of the same URL finds the file
        "outtmpl": str(dest / "%(extractor)s-%(id)s.%(ext)s"),
        "restrictfilenames": True,
        "writeinfojson": True,
        "continuedl": True,      # resume a .part left by an interrupted download
        "noplaylist": True,
        "quiet": True, "noprogress": True, "no_warnings": True,
        "logger": log,
        "progress_hooks": [hook],
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
            if info is None:
                raise SourceError(f"{public_url(url)}: yt-dlp found nothing to download; check the URL")
            info = ydl.sanitize_info(info)
            reqs = info.get("requested_downloads") or [{}]
            path = Path(reqs[0].get("filepath") or ydl.prepare_filename(info))
    except SourceError:
        raise
    except Exception as e:  # yt-dlp's DownloadError and friends
        shown = public_url(url) or url
        reason = (_short(log.last_error or str(e)) or type(e).__name__).replace(url, shown)
        raise SourceError(f"{shown}: download failed ({reason}); check the URL and the network, "
                          "then run the same `mikupal add` again to resume") from None
    info_path = path.with_name(path.stem + ".info.json")
    if not info_path.is_file():  # yt-dlp skips writing it when the video was already there
        info_path.write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    return Download(path=path, info_path=info_path, provenance=provenance(info, str(info_path)))
