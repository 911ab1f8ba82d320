"""Fixtures shared by the whole suite.

- `shared_models`: the real third-party weights (../shared/models), or a skip saying why.
- `demo_clip`: the synthetic two-face talking clip (built once per session).
- `project`: a fresh MIKU-PAL project folder with its project.db.
- skip_policy's hooks: a skip for anything but an optional item fails, and the run ends with
  a "skipped, by reason" block.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from skip_policy import pytest_make_collect_report, pytest_runtest_makereport, pytest_terminal_summary  # noqa: F401

# Widgets render without a display unless a test asks for the X server (make test runs Xvfb).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MIKUPAL_AUDIO", "none")

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]  # tests/test_skips_policy.py runs the skip hooks on small test files


def _shared_models_dir() -> Path:
    env = os.environ.get("MIKUPAL_TEST_MODELS")
    return (Path(env) if env else REPO.parent / "shared" / "models").resolve()  # tests build file:// URLs from it


@pytest.fixture(scope="session")
def shared_models() -> Path:
    d = _shared_models_dir()
    if not (d / "light-asd").is_dir() or not (d / "ultraface").is_dir():
        pytest.skip(f"real weights not found at {d} (set MIKUPAL_TEST_MODELS to the shared models folder)")
    return d


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory):
    from mikupal.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("demo") / "demo.mp4", speaker="left")


@pytest.fixture()
def project(tmp_path, monkeypatch):
    from mikupal.project import Project

    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(tmp_path / "models"))
    return Project.create(tmp_path / "proj")
