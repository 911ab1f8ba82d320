"""The PyInstaller one-folder build starts and prints its version (the packaging smoke test)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mikupal

REPO = Path(__file__).resolve().parents[1]


def test_desktop_entry_and_icons():
    entry = (REPO / "resources" / "mikupal.desktop").read_text()
    assert "Exec=mikupal gui" in entry and "Icon=mikupal" in entry and "Type=Application" in entry
    for name in ("mikupal.svg", "mikupal-256.png", "mikupal-64.png"):
        assert (REPO / "resources" / "icons" / name).stat().st_size > 0


@pytest.mark.slow
def test_frozen_app_prints_version(tmp_path):
    pyinstaller = Path(sys.executable).with_name("pyinstaller")
    assert pyinstaller.exists(), "PyInstaller is missing: it comes with the dev extra (make setup)"
    r = subprocess.run(
        [str(pyinstaller), "--noconfirm", "--log-level", "ERROR", "--distpath", str(tmp_path / "dist"),
         "--workpath", str(tmp_path / "build"), str(REPO / "packaging" / "mikupal.spec")],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    exe = tmp_path / "dist" / "mikupal" / "mikupal"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"mikupal {mikupal.__version__}"
    # It is the real CLI: it creates and reads a project.
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run([str(exe), "init", str(tmp_path / "p")], check=True, capture_output=True, timeout=120, env=env)
    st = subprocess.run([str(exe), "status", str(tmp_path / "p"), "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert st.returncode == 0 and '"videos": 0' in st.stdout
    # The bundled resources travel with the app (taxonomy and prompts are data files).
    assert (tmp_path / "dist" / "mikupal" / "_internal" / "mikupal" / "resources" / "taxonomy").is_dir()
    shutil.rmtree(tmp_path / "build", ignore_errors=True)
