"""`mikupal add URL` downloads with yt-dlp from a local HTTP server (127.0.0.1, no internet),
resumes a partial download, keeps the .info.json, and records provenance; a yt-dlp
`.info.json` beside a local file is read too."""
from __future__ import annotations

import hashlib
import http.server
import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import export_fixture as fx  # noqa: E402

from mikupal import store  # noqa: E402
from mikupal.project import Project  # noqa: E402


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the files of `server.files` with Range support and records each request's Range."""

    def do_GET(self):  # noqa: N802
        data = self.server.files.get(self.path.split("?")[0])
        self.server.ranges.append(self.headers.get("Range"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "video/x-matroska")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Last-Modified", "Tue, 03 Mar 2026 10:00:00 GMT")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory):
    p = tmp_path_factory.mktemp("src") / "talk.mkv"
    fx.make_video(p, 1)
    return p.read_bytes()


@pytest.fixture()
def server(video_bytes):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"/media/talk.mkv": video_bytes}
    srv.ranges = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _cli(*args):
    from typer.testing import CliRunner

    from mikupal.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _videos(proj: Project) -> list[dict]:
    db = proj.db()
    try:
        return store.rows(db, "SELECT * FROM videos ORDER BY id")
    finally:
        db.conn.close()


def test_add_url_downloads_keeps_info_json_and_records_the_source(tmp_path, server, video_bytes):
    srv, base = server
    proj = Project.create(tmp_path / "proj")
    url = f"{base}/media/talk.mkv"
    r = _cli("add", proj.root, url)
    assert r.exit_code == 0, r.output
    assert "1 added" in r.output
    [v] = _videos(proj)
    assert v["sha256"] == hashlib.sha256(video_bytes).hexdigest()  # the served bytes, whole
    media = Path(v["path"])
    assert media.parent == proj.root / "sources" and media.read_bytes() == video_bytes
    info = json.loads(Path(v["source_info_json"]).read_text())
    assert Path(v["source_info_json"]).parent == media.parent and info["webpage_url"] == url
    assert v["source_url"] == url and v["source_title"] == "talk" and v["source_id"] == "generic:talk"
    assert v["source_upload_date"] == "2026-03-03"  # from the server's Last-Modified header
    assert v["source_license"] is None and v["source_uploader"] is None  # a bare file URL has neither
    r = _cli("add", proj.root, url)  # the same URL again: same file, nothing new
    assert r.exit_code == 0 and "0 added, 1 already present" in r.output, r.output
    assert len(_videos(proj)) == 1


def test_an_interrupted_download_resumes_from_its_part_file(tmp_path, server, video_bytes):
    srv, base = server
    proj = Project.create(tmp_path / "proj")
    half = len(video_bytes) // 2
    (proj.root / "sources").mkdir()
    (proj.root / "sources" / "generic-talk.mkv.part").write_bytes(video_bytes[:half])
    r = _cli("add", proj.root, f"{base}/media/talk.mkv")
    assert r.exit_code == 0, r.output
    assert f"bytes={half}-" in srv.ranges  # asked only for the rest
    [v] = _videos(proj)
    assert Path(v["path"]).read_bytes() == video_bytes
    assert not list((proj.root / "sources").glob("*.part"))


def test_a_failed_download_is_one_line_and_the_other_items_still_go_in(tmp_path, server):
    srv, base = server
    proj = Project.create(tmp_path / "proj")
    local = tmp_path / "local.mkv"
    fx.make_video(local, 2)
    r = _cli("add", proj.root, f"{base}/media/missing.mkv", local)
    assert r.exit_code == 2
    errs = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert len(errs) == 1 and "missing.mkv" in errs[0] and "download failed" in errs[0] and "404" in errs[0]
    assert [Path(v["path"]).name for v in _videos(proj)] == ["local.mkv"]
    db = proj.db()
    rows = store.rows(db, "SELECT stage, path FROM errors")
    db.conn.close()
    assert rows == [{"stage": "add", "path": f"{base}/media/missing.mkv"}]


def test_a_sidecar_info_json_beside_a_local_file_gives_its_provenance(tmp_path):
    proj = Project.create(tmp_path / "proj")
    d = tmp_path / "downloads"
    d.mkdir()
    a, b = d / "Episode 1 [abc123].mkv", d / "plain.mkv"
    fx.make_video(a, 0)
    fx.make_video(b, 3)
    (d / "Episode 1 [abc123].info.json").write_text(json.dumps({
        "id": "abc123", "extractor_key": "Youtube", "webpage_url": "https://www.youtube.com/watch?v=abc123",
        "title": "Episode  1:\nthe pilot", "uploader": "Some Channel", "upload_date": "20240131",
        "license": "Creative Commons Attribution license (reuse allowed)"}), encoding="utf-8")
    (d / "plain.info.json").write_text("{not json", encoding="utf-8")
    r = _cli("add", proj.root, d)
    assert r.exit_code == 0, r.output  # a damaged sidecar warns; the video still goes in
    warn = [x for x in r.output.splitlines() if x.startswith("warning:")]
    assert len(warn) == 1 and "plain.info.json" in warn[0]
    rows = {Path(v["path"]).name: v for v in _videos(proj)}
    ep = rows["Episode 1 [abc123].mkv"]
    assert (ep["source_url"], ep["source_id"], ep["source_title"], ep["source_uploader"], ep["source_upload_date"],
            ep["source_license"]) == ("https://www.youtube.com/watch?v=abc123", "youtube:abc123", "Episode 1: the pilot",
                                      "Some Channel", "2024-01-31", "Creative Commons Attribution license (reuse allowed)")
    assert rows["plain.mkv"]["source_url"] is None and rows["plain.mkv"]["source_info_json"] is None


def test_credentials_in_a_url_never_reach_the_database_or_the_messages(tmp_path, server, video_bytes):
    srv, base = server
    proj = Project.create(tmp_path / "proj")
    host = base.split("://", 1)[1]
    good, bad = f"http://someone:s3cret-token@{host}/media/talk.mkv", f"http://someone:s3cret-token@{host}/media/gone.mkv"
    r = _cli("add", proj.root, good, bad)
    assert r.exit_code == 2 and "1 added" in r.output
    assert "s3cret" not in r.output
    [v] = _videos(proj)
    assert v["source_url"] == f"{base}/media/talk.mkv"
    dump = "\n".join(proj.db().conn.iterdump())
    assert "s3cret" not in dump
