"""The model manager's offline paths: present files, clear missing messages, checksums."""
import hashlib
import shutil
import json
import subprocess
import sys

import pytest

from mikupal import models
from mikupal.stage import ModelMissingError


def test_registry_is_complete():
    stages = {m.stage for m in models.REGISTRY.values()}
    assert stages == {"separate", "asr", "faces", "asd"}
    for m in models.REGISTRY.values():
        assert m.files and m.licence and m.source
    for size in ("tiny", "base", "small", "medium", "large-v3"):
        assert f"whisper-{size}" in models.REGISTRY


def test_shared_weights_are_found_and_verified(shared_models, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(shared_models))
    p = models.ensure("light-asd", allow_download=False)
    assert p == shared_models / "light-asd" / "finetuning_TalkSet.model"
    assert models.ensure("ultraface", allow_download=False) == shared_models / "ultraface"


def test_missing_offline_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelMissingError) as e:
        models.ensure("s3fd", allow_download=False)
    msg = str(e.value)
    assert str(tmp_path / "s3fd" / "s3fd-619a316812.pth") in msg and "adrianbulat.com" in msg and "\n" not in msg


def test_corrupt_file_is_not_accepted(tmp_path, monkeypatch, shared_models):
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path))
    (tmp_path / "light-asd").mkdir()
    (tmp_path / "light-asd" / "finetuning_TalkSet.model").write_bytes(b"truncated download")
    assert models.file_status(models.REGISTRY["light-asd"].files[0], tmp_path) == "bad checksum"
    with pytest.raises(ModelMissingError):
        models.ensure("light-asd", allow_download=False)


def test_download_verifies_checksum(tmp_path, monkeypatch, shared_models):
    """A file:// URL exercises the real download path (progress + digest + atomic rename)."""
    src = shared_models / "light-asd" / "finetuning_TalkSet.model"
    good = models.ModelFile("x/ok.bin", src.as_uri(), sha256=hashlib.sha256(src.read_bytes()).hexdigest())
    seen = []
    out = models.download_file(good, tmp_path, progress=lambda d, t: seen.append(d))
    assert out.read_bytes() == src.read_bytes() and seen[-1] == src.stat().st_size
    bad = models.ModelFile("x/bad.bin", src.as_uri(), sha256="0" * 64)
    with pytest.raises(ModelMissingError, match="checksum mismatch"):
        models.download_file(bad, tmp_path)
    assert not (tmp_path / "x" / "bad.bin").exists()
    assert not [p for p in (tmp_path / "x").iterdir() if p.name.endswith(".part")]


def test_cli_check_and_doctor(tmp_path, shared_models):
    env = {"MIKUPAL_MODELS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "GEMINI_API_KEY": "sk-secret-do-not-print"}
    proj = tmp_path / "p"
    subprocess.run([sys.executable, "-m", "mikupal.cli", "init", str(proj)], check=True, capture_output=True, env=env)
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", "models", "check", str(proj)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "MISSING light-asd" in r.stdout and str(tmp_path / "light-asd") in r.stdout
    shutil.copytree(shared_models / "light-asd", tmp_path / "light-asd")
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", "models", "check", str(proj)], capture_output=True, text=True, env=env)
    assert "ok light-asd" in r.stdout
    d = subprocess.run([sys.executable, "-m", "mikupal.cli", "doctor"], capture_output=True, text=True, env=env)
    assert d.returncode == 0 and "Gemini API key: present" in d.stdout
    assert "sk-secret" not in d.stdout + d.stderr


# ---- audio-separator's metadata files travel with every MDX model -------------------------------

def test_mdx_models_list_audio_separators_metadata_files():
    from mikupal.audio import separate

    seps = [m for m in models.REGISTRY.values() if m.stage == "separate"]
    assert seps
    for m in seps:
        weights, *meta = m.files
        assert weights.relpath == f"{separate.SUBDIR}/{m.id}" and weights.url.endswith(m.id)
        # the same URLs the separator names (one source), unpinned and size-less: they change upstream
        assert {f.relpath: f.url for f in meta} == {f"{separate.SUBDIR}/{n}": u for n, u in separate.METADATA_URLS.items()}
        assert all(f.sha256 is None and f.sha256_prefix is None and f.size_mb is None for f in meta)
        assert m.size_mb == weights.size_mb


def test_importing_the_model_manager_loads_no_separator():
    code = ("import sys, mikupal.models; "
            "sys.exit(any(m.startswith(('audio_separator', 'mikupal.audio', 'torch', 'PySide6')) for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _serve(folder):
    """A local HTTP server for `folder` (404 for anything else); returns (base URL, server)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}", srv


def _served_copy(model, base):
    """The registry entry with every file's URL pointing at the local server (same paths)."""
    import dataclasses

    files = tuple(dataclasses.replace(f, url=f"{base}/{f.relpath.rsplit('/', 1)[-1]}") for f in model.files)
    return dataclasses.replace(model, files=files)


def test_download_of_an_mdx_model_fetches_its_metadata_files(tmp_path, monkeypatch):
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    mid = "Kim_Vocal_2.onnx"
    (upstream / mid).write_bytes(b"onnx weights" * 100)
    for name in ("download_checks.json", "mdx_model_data.json", "vr_model_data.json"):
        (upstream / name).write_text('{"name": "%s"}' % name)
    base, srv = _serve(upstream)
    try:
        monkeypatch.setitem(models.REGISTRY, mid, _served_copy(models.REGISTRY[mid], base))
        root = tmp_path / "models"
        monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(root))
        # weights already there (copied by hand), metadata missing: the model is not present
        (root / "audio-separator").mkdir(parents=True)
        (root / "audio-separator" / mid).write_bytes((upstream / mid).read_bytes())
        assert models.model_status(models.REGISTRY[mid], root) == "missing"
        with pytest.raises(ModelMissingError) as e:
            models.ensure(mid, allow_download=False)
        assert "mdx_model_data.json" in str(e.value) and str(root / "audio-separator" / mid) not in str(e.value)
        got = []
        assert models.ensure(mid, allow_download=True, progress=lambda n, d, t: got.append(n)) == root / "audio-separator"
        assert set(got) == {f"audio-separator/{n}" for n in ("download_checks.json", "mdx_model_data.json",
                                                             "vr_model_data.json")}
        assert (root / "audio-separator" / "mdx_model_data.json").read_text() == '{"name": "mdx_model_data.json"}'
        assert models.model_status(models.REGISTRY[mid], root) == "present"
        # a file the server does not have: the reason and what is still missing, nothing partial kept
        (root / "audio-separator" / "vr_model_data.json").unlink()
        (upstream / "vr_model_data.json").unlink()
        with pytest.raises(ModelMissingError) as e:
            models.ensure(mid, allow_download=True)
        msg = str(e.value)
        assert "\n" not in msg and "404" in msg and str(root / "audio-separator" / "vr_model_data.json") in msg
        assert "mdx_model_data.json" not in msg  # present, so not asked for again
        assert not [p for p in (root / "audio-separator").iterdir() if p.name.endswith(".part")]
    finally:
        srv.shutdown()


def test_cli_check_names_a_missing_separator_metadata_file(tmp_path):
    env = {"MIKUPAL_MODELS_DIR": str(tmp_path / "models"), "PATH": "/usr/bin:/bin"}
    proj = tmp_path / "p"
    subprocess.run([sys.executable, "-m", "mikupal.cli", "init", str(proj)], check=True, capture_output=True, env=env)
    sep = tmp_path / "models" / "audio-separator"
    sep.mkdir(parents=True)
    (sep / "UVR-MDX-NET-Inst_HQ_3.onnx").write_bytes(b"weights")
    (sep / "download_checks.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", "models", "check", str(proj)], capture_output=True,
                       text=True, env=env)
    line = next(ln for ln in r.stdout.splitlines() if "UVR-MDX-NET-Inst_HQ_3.onnx:" in ln)
    assert line.startswith("MISSING") and str(sep / "mdx_model_data.json") in line and str(sep / "vr_model_data.json") in line
    assert str(sep / "download_checks.json") not in line
    for name in ("mdx_model_data.json", "vr_model_data.json"):
        (sep / name).write_text("{}")
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", "models", "check", str(proj)], capture_output=True,
                       text=True, env=env)
    assert "ok UVR-MDX-NET-Inst_HQ_3.onnx" in r.stdout


def test_doctor_reports_the_qt_binding_without_importing_qt(monkeypatch):
    import importlib.metadata

    from mikupal.cli import models as models_cli

    real = importlib.metadata.version
    assert models_cli.qt_binding_line() == f"Qt binding: PySide6 {real('PySide6')}"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "6.12.0" if name == "PySide6" else real(name))
    line = models_cli.qt_binding_line()
    assert "6.12.0 is known bad" in line and 'pip install "PySide6!=6.12.0"' in line

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", absent)
    assert "not installed" in models_cli.qt_binding_line()
    monkeypatch.setattr(importlib.metadata, "version", real)
    code = ("import sys; from mikupal.cli.models import doctor; doctor(); "
            "sys.exit(3 if any(m.startswith('PySide6') for m in sys.modules) else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1000:]
    assert f"Qt binding: PySide6 {real('PySide6')}" in r.stdout


def test_a_transfer_that_breaks_off_is_not_kept(tmp_path):
    """Unpinned files (metadata, whisper) have no digest: the byte count must match Content-Length."""
    import http.server
    import threading

    class Short(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"{\"partial\": ")
            self.close_connection = True

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        f = models.ModelFile("audio-separator/mdx_model_data.json", f"http://127.0.0.1:{srv.server_address[1]}/m.json")
        with pytest.raises(ModelMissingError, match="broke off after 12 of 100000 bytes"):
            models.download_file(f, tmp_path)
        assert not (tmp_path / "audio-separator" / "mdx_model_data.json").exists()
        assert not list((tmp_path / "audio-separator").iterdir())
    finally:
        srv.shutdown()
        srv.server_close()


def test_list_and_download_follow_a_projects_models_dir(tmp_path, shared_models):
    """`--project` points list/download at that project's [models] dir (no env override)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proj, weights = tmp_path / "p", tmp_path / "weights"
    subprocess.run([sys.executable, "-m", "mikupal.cli", "init", str(proj)], check=True, capture_output=True, env=env)
    toml = proj / "mikupal.toml"
    toml.write_text(toml.read_text().replace('dir = ""', f'dir = "{weights}"', 1))
    shutil.copytree(shared_models / "light-asd", weights / "light-asd")

    def status(*extra):
        r = subprocess.run([sys.executable, "-m", "mikupal.cli", "models", "list", "--json", *extra],
                           capture_output=True, text=True, env=env, check=True)
        return {m["id"]: m["status"] for m in json.loads(r.stdout)}["light-asd"]

    assert status() == "missing"  # the user cache knows nothing of it
    assert status("--project", str(proj)) == "present"
    # Already present in the project's dir: download has nothing to fetch (works offline).
    r = subprocess.run([sys.executable, "-m", "mikupal.cli", "models", "download", "light-asd", "-p", str(proj)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and str(weights / "light-asd") in r.stdout.replace("\n", "")
