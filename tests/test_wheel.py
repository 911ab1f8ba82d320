"""The built wheel is the product: it installs, carries its resources, and runs the demo from
outside the checkout (no source tree on sys.path, no editable finder)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy of the working tree: setuptools reuses a build/ folder, whose stale
    # files (a module deleted since) would otherwise end up in the wheel.
    src = tmp_path_factory.mktemp("src") / "mikupal"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                                              "__pycache__", "demo-project", ".pytest_cache"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("mikupal-*.whl")
    return whl


def test_wheel_ships_resources_and_no_generic_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mikupal", "mikupal_gui"}
    for res in ("mikupal/resources/taxonomy/cowen26.json", "mikupal/resources/prompts/emotion_system.txt",
                "mikupal/resources/icons/mikupal-256.png", "mikupal/resources/mikupal.desktop"):
        assert res in names, res
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mikupal = mikupal_gui.launcher:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # The dependencies come from the test environment's site-packages (a plain path entry: its
    # .pth files, including the editable install of this checkout, are not processed).
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=600, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    where = subprocess.run([str(py), "-c", "import mikupal, mikupal_gui, mikupal.resources as r;"
                            " print(mikupal.__file__); print(r.path('taxonomy'))"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    assert all(str(venv) in line for line in where.stdout.splitlines()), where.stdout
    assert str(REPO) not in where.stdout
    demo = subprocess.run([str(venv / "bin" / "mikupal"), "demo", "--no-gui", str(tmp_path / "demo")],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    assert "unknown label set" not in demo.stderr
    st = subprocess.run([str(venv / "bin" / "mikupal"), "status", str(tmp_path / "demo"), "--json"],
                        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert st.returncode == 0, st.stderr
    import json

    counts = json.loads(st.stdout)["counts"]
    assert counts["segments"] > 0 and counts["annotations"] > 0
