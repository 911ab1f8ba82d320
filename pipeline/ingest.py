"""`mikupal add`: probe videos, store them by content hash, record bad files per item.

Items are files, folders or http(s) URLs; a URL is downloaded with yt-dlp into the
project's `sources/` folder first (mikupal.sources). Provenance (URL, title, uploader,
upload date, licence) comes from yt-dlp's `.info.json`, also when it sits beside a local file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import sources, store
from .fileutil import sha256_file
from .media import VIDEO_SUFFIXES, MediaError, probe


@dataclass
class AddReport:
    added: list[tuple[int, Path]] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)
    failed: list[tuple[Path | str, str]] = field(default_factory=list)  # (path or URL, message)


def iter_media(paths: Iterable[str | Path]) -> Iterable[Path | str]:
    """Files as given, folders walked recursively (media suffixes only, sorted, no hidden);
    URLs are passed through as strings."""
    for p in paths:
        if sources.is_url(p):
            yield str(p).strip()
            continue
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in VIDEO_SUFFIXES:
                        yield Path(root) / name
        else:
            yield p


def add_videos(db, paths: Iterable[str | Path], on_line: Callable[[str], None] | None = None,
               *, download_dir: Path | None = None,
               on_progress: sources.DownloadProgress | None = None) -> AddReport:
    """Add each video once (by sha256). A bad file or a failed download gets an errors row;
    the others still go in. URLs are downloaded into `download_dir` (resumable)."""
    report = AddReport()
    say = on_line or (lambda s: None)
    for item in iter_media(paths):
        prov: dict = {}
        try:
            if isinstance(item, str):  # a URL
                if download_dir is None:
                    raise sources.SourceError(f"{sources.public_url(item)}: URLs need a project to download into")
                got = sources.download(item, download_dir, on_progress)
                path, prov = got.path.resolve(), got.provenance
            else:
                path = item.resolve() if item.exists() else item
                if not path.exists():
                    raise MediaError(f"{path}: no such file; check the path")
                prov = _sidecar(db, path, say)
            info = probe(path)
            if not info.has_audio:
                raise MediaError(f"{path}: has no audio track; MIKU-PAL labels speech, add the version with sound")
            if info.duration_s <= 0:
                raise MediaError(f"{path}: duration is zero; the file is truncated, re-encode or re-copy it")
            sha = sha256_file(path)
        except (MediaError, sources.SourceError) as e:
            msg = str(e)
            where = (sources.public_url(item) or item) if isinstance(item, str) else str(path)
            store.record_error(db, "add", msg, path=where)
            report.failed.append((where if isinstance(item, str) else path, msg))
            say(f"error: {msg}")
            continue
        existing = db.conn.execute("SELECT id, path FROM videos WHERE sha256=?", (sha,)).fetchone()
        if existing:
            report.already.append(path)
            if prov and _fill_provenance(db, existing[0], prov):
                say(f"already added: {path} (video {existing[0]}); source details recorded")
            else:
                say(f"already added: {path} (video {existing[0]})")
            continue
        row = {"sha256": sha, "path": str(path), "added_at": store.now(), **info.as_row(),
               **{k: v for k, v in prov.items() if v is not None}}
        cur = db.conn.execute(
            f"INSERT OR IGNORE INTO videos ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
        if cur.rowcount == 0:  # another process added the same content meanwhile
            report.already.append(path)
            continue
        report.added.append((int(cur.lastrowid), path))
        title = f" \"{prov['source_title']}\"" if prov.get("source_title") else ""
        say(f"added: {path}{title} (video {cur.lastrowid}, {info.duration_s:.1f} s)")
    return report


def _sidecar(db, path: Path, say) -> dict:
    """Provenance from `NAME.info.json` beside the file; a damaged one is recorded and the
    video still goes in (without source details)."""
    side = sources.sidecar_for(path)
    if side is None:
        return {}
    try:
        return sources.read_sidecar(side)
    except sources.SourceError as e:
        store.record_error(db, "add", str(e), path=str(side))
        say(f"warning: {e}")
        return {}


def _fill_provenance(db, video_id: int, prov: dict) -> bool:
    """Known source facts fill a video's empty source_* columns (never overwrite); True if any did."""
    sets = [c for c in sources.SOURCE_COLUMNS if prov.get(c) is not None]
    if not sets:
        return False
    cur = db.conn.execute(
        "UPDATE videos SET " + ", ".join(f"{c} = COALESCE({c}, ?)" for c in sets)
        + " WHERE id = ? AND (" + " OR ".join(f"{c} IS NULL" for c in sets) + ")",
        (*[prov[c] for c in sets], video_id))
    return cur.rowcount > 0
