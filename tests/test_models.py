"""The model manager's offline paths: present files, clear missing messages, checksums."""
import hashlib
import shutil
import subprocess
import sys

import pytest

from pipeline import models
from pipeline.stage import ModelMissingError


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
    subprocess.run([sys.executable, "-m", "pipeline.cli", "init", str(proj)], check=True, capture_output=True, env=env)
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "check", str(proj)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "MISSING light-asd" in r.stdout and str(tmp_path / "light-asd") in r.stdout
    shutil.copytree(shared_models / "light-asd", tmp_path / "light-asd")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "models", "check", str(proj)], capture_output=True, text=True, env=env)
    assert "ok light-asd" in r.stdout
    d = subprocess.run([sys.executable, "-m", "pipeline.cli", "doctor"], capture_output=True, text=True, env=env)
    assert d.returncode == 0 and "Gemini API key: present" in d.stdout
    assert "sk-secret" not in d.stdout + d.stderr
