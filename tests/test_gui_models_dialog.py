"""Tools > Models: the registry with each model's status in the project's models dir, what the
settings need, and downloads on a background thread (from a local HTTP server; no model hub
is reachable here). Real widgets, real files, offscreen (pytest-qt)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from PySide6.QtCore import QSettings  # noqa: E402

from mikupal import models  # noqa: E402
from mikupal.project import Project  # noqa: E402

from mikupal_gui.dialogs import ModelsDialog  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path):
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    yield tmp_path / "qsettings"


@pytest.fixture()
def models_root(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("MIKUPAL_MODELS_DIR", str(root))
    return root


@pytest.fixture()
def proj(tmp_path, models_root):
    return Project.create(tmp_path / "proj", name="dialog-test")


HOLD_AFTER = 1 << 20  # the client reads 1 MiB blocks: the first one arrives, then the server waits


class _HeldHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files; a file over 1 MiB goes out as its first MiB, then nothing until the test
    sets `hold` (so "during the download" is a state the test controls, not a race)."""

    def __init__(self, *args, hold: threading.Event, **kwargs):
        self.hold = hold  # before super().__init__, which handles the request
        super().__init__(*args, **kwargs)

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.directory) / self.path.rsplit("/", 1)[-1]
        if not path.is_file() or path.stat().st_size <= HOLD_AFTER:
            return super().do_GET()
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data[:HOLD_AFTER])
            self.wfile.flush()
            self.hold.wait(120)
            self.wfile.write(data[HOLD_AFTER:])
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture()
def hold():
    """Set it to let held transfers go on; set at teardown so no server thread is left waiting."""
    ev = threading.Event()
    yield ev
    ev.set()


@pytest.fixture()
def server(tmp_path, hold):
    """A local HTTP server for tmp_path/upstream; yields (folder, base URL)."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    handler = functools.partial(_HeldHandler, directory=str(folder), hold=hold)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{srv.server_address[1]}"
    hold.set()
    srv.shutdown()
    srv.server_close()


def _register(monkeypatch, mid: str, relpath: str, url: str, sha256: str | None):
    m = models.Model(mid, "asd", f"test model {mid}", "MIT", url,
                     (models.ModelFile(relpath, url, sha256=sha256, size_mb=0.01),))
    monkeypatch.setitem(models.REGISTRY, mid, m)
    return m


def _no_leftovers(folder: Path) -> bool:
    return not folder.exists() or not [p for p in folder.rglob("*") if p.name.endswith(".part")]


def test_lists_the_registry_with_status_and_what_the_project_needs(qtbot, proj, models_root):
    # a user-supplied file is present; a pinned file with other bytes is a bad checksum
    (models_root / "talknet").mkdir(parents=True)
    (models_root / "talknet" / "pretrain_TalkSet.model").write_bytes(b"tiny stand-in weights")
    (models_root / "ultraface").mkdir()
    (models_root / "ultraface" / "version-RFB-320.onnx").write_bytes(b"not the real onnx")
    dlg = ModelsDialog(proj)
    qtbot.addWidget(dlg)
    dlg.show()

    assert dlg.table.rowCount() == len(models.REGISTRY)
    assert [dlg.table.item(r, 0).text() for r in range(dlg.table.rowCount())] == list(models.REGISTRY)
    m = models.REGISTRY["light-asd"]
    assert dlg.cell("light-asd", "Stage") == "asd" and dlg.cell("light-asd", "Licence") == m.licence
    assert dlg.cell("light-asd", "Size") == "4 MB" and dlg.cell("whisper-large-v3", "Size") == "3.1 GB"
    assert dlg.cell("talknet", "Status") == "present" and dlg.cell("talknet", "Needed") == ""
    # the default settings need light-asd (missing) and ultraface (bad checksum), not whisper-tiny
    assert set(models.required_models(proj.config)) >= {"light-asd", "ultraface"}
    assert dlg.cell("light-asd", "Status") == "missing" and dlg.cell("light-asd", "Needed") == "yes"
    assert dlg.cell("ultraface", "Status") == "bad checksum" and dlg.cell("ultraface", "Needed") == "yes"
    assert dlg.cell("whisper-tiny", "Needed") == "" and dlg.cell("whisper-tiny", "Status") == "missing"
    # the MDX model's row covers audio-separator's metadata files too (in its tooltip)
    tip = dlg.table.item(dlg.row_of("UVR-MDX-NET-Inst_HQ_3.onnx"), 0).toolTip()
    assert str(models_root / "audio-separator" / "mdx_model_data.json") in tip
    n = len(models.required_models(proj.config))
    assert f"needs {n} models: 0 present" in dlg.summary.text() and "dialog-test" in dlg.summary.text()
    assert str(models_root) in dlg.dir_label.text() and "MIKUPAL_MODELS_DIR" in dlg.dir_label.text()
    assert not dlg.download_btn.isEnabled() and dlg.needed_btn.isEnabled()
    dlg.select(["talknet"])
    assert not dlg.download_btn.isEnabled()  # nothing to fetch for a present model
    dlg.select(["light-asd", "talknet"])
    assert dlg.download_btn.isEnabled() and dlg.selected_ids() == ["light-asd", "talknet"]


def test_the_projects_models_dir_is_used_without_the_environment(qtbot, tmp_path, monkeypatch):
    monkeypatch.delenv("MIKUPAL_MODELS_DIR", raising=False)
    Project.create(tmp_path / "p")
    mine = tmp_path / "my-models"
    (mine / "light-asd").mkdir(parents=True)
    shared = Path(__file__).resolve().parents[2] / "shared" / "models" / "light-asd" / "finetuning_TalkSet.model"
    if not shared.is_file():
        pytest.skip(f"real weights not found at {shared}")
    (mine / "light-asd" / "finetuning_TalkSet.model").write_bytes(shared.read_bytes())
    p = Project.open(tmp_path / "p", [f'models.dir="{mine}"'])
    dlg = ModelsDialog(p)
    qtbot.addWidget(dlg)
    assert dlg.root == mine and str(mine) in dlg.dir_label.text() and "[models] dir" in dlg.dir_label.text()
    assert dlg.cell("light-asd", "Status") == "present"  # sha256 checked
    assert dlg.cell("light-asd-ava", "Status") == "missing"


def test_download_from_a_server_fills_the_file_and_refreshes(qtbot, proj, models_root, server, hold, monkeypatch):
    folder, base = server
    data = bytes(range(256)) * 12000  # ~3 MB: the server sends 1 MiB, then waits for `hold`
    (folder / "tiny.bin").write_bytes(data)
    _register(monkeypatch, "test-tiny", "test/tiny.bin", f"{base}/tiny.bin", hashlib.sha256(data).hexdigest())
    dlg = ModelsDialog(proj)
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.cell("test-tiny", "Status") == "missing"
    dlg.select(["test-tiny"])
    with qtbot.waitSignal(dlg.thread_done, timeout=60000):
        dlg.download_btn.click()
        # the transfer is held open half-way: the dialog shows it moving and stays usable
        # (a download on the GUI thread would block in click() until the server gave up)
        qtbot.waitUntil(lambda: dlg.progress.value() == HOLD_AFTER // 1024, timeout=30000)
        assert dlg.cancel_btn.isVisible() and dlg.progress.isVisible() and not dlg.download_btn.isEnabled()
        assert dlg.downloaded == [] and not (models_root / "test" / "tiny.bin").exists()
        hold.set()
    assert (models_root / "test" / "tiny.bin").read_bytes() == data
    assert dlg.cell("test-tiny", "Status") == "present"
    assert dlg.downloaded == ["test-tiny"] and dlg.errors == []
    assert dlg.message.toPlainText() == "Downloaded test-tiny." and dlg.message.isVisible()
    assert not dlg.progress.isVisible() and not dlg.cancel_btn.isVisible()
    # the bar counted the file's KiB to the end
    assert dlg.progress.maximum() == len(data) // 1024 == dlg.progress.value()
    assert _no_leftovers(models_root)
    assert not dlg.download_btn.isEnabled()  # the selected model is present now


def test_failed_downloads_say_which_file_goes_where_and_leave_nothing(qtbot, proj, models_root, server, monkeypatch):
    folder, base = server
    (folder / "real.bin").write_bytes(b"the bytes the server has")
    _register(monkeypatch, "test-bad-sum", "test/bad.bin", f"{base}/real.bin", "0" * 64)
    _register(monkeypatch, "test-404", "test/gone.bin", f"{base}/gone.bin", None)
    _register(monkeypatch, "test-offline", "test/off.bin", "http://127.0.0.1:9/off.bin", None)  # refused
    dlg = ModelsDialog(proj)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.select(["test-bad-sum", "test-404", "test-offline", "talknet"])
    with qtbot.waitSignal(dlg.thread_done, timeout=60000):
        dlg.download_btn.click()
    lines = [ln for ln in dlg.message.toPlainText().splitlines() if ln]
    assert len(lines) == 4 and dlg.downloaded == [] and "color" in dlg.message.styleSheet()
    by = {line.split()[1]: line for line in lines}  # "model <id> could not be downloaded (why): place …"
    assert set(by) == {"test-bad-sum", "test-404", "test-offline", "talknet"}
    assert by["test-bad-sum"].startswith("model test-bad-sum could not be downloaded (test/bad.bin: checksum mismatch")
    assert "checksum mismatch" in by["test-bad-sum"] and str(models_root / "test" / "bad.bin") in by["test-bad-sum"]
    assert "404" in by["test-404"] and str(models_root / "test" / "gone.bin") in by["test-404"]
    assert "no connection" in by["test-offline"] and "refused" in by["test-offline"].lower() and str(models_root / "test" / "off.bin") in by["test-offline"]
    assert by["talknet"].startswith("model talknet is missing: place ") and str(models_root / "talknet" / "pretrain_TalkSet.model") \
        in by["talknet"] and "github.com/TaoRuijie/TalkNet-ASD" in by["talknet"]
    for name in ("bad.bin", "gone.bin", "off.bin"):
        assert not (models_root / "test" / name).exists()
    assert _no_leftovers(models_root)
    assert dlg.cell("test-bad-sum", "Status") == "missing" and dlg.isVisible()
    # the dialog still works afterwards
    dlg.select(["test-404"])
    assert dlg.download_btn.isEnabled()


def test_cancel_stops_the_download_and_keeps_no_partial_file(qtbot, proj, models_root, server, hold, monkeypatch):
    folder, base = server
    data = b"x" * (4 << 20)  # the server sends 1 MiB, then holds the other 3 until after Cancel
    (folder / "slow.bin").write_bytes(data)
    _register(monkeypatch, "test-slow", "test/slow.bin", f"{base}/slow.bin", hashlib.sha256(data).hexdigest())
    dlg = ModelsDialog(proj)
    qtbot.addWidget(dlg)
    dlg.show()
    with qtbot.waitSignal(dlg.thread_done, timeout=60000):
        assert dlg.download(["test-slow"])
        qtbot.waitUntil(lambda: dlg.progress.value() > 0, timeout=30000)  # the first MiB is in
        assert dlg.progress.maximum() == len(data) // 1024
        dlg.cancel_btn.click()
        hold.set()  # the next block arrives after Cancel: the download must stop there
    assert "cancelled" in dlg.message.toPlainText()
    assert not (models_root / "test" / "slow.bin").exists() and _no_leftovers(models_root)
    assert dlg.cell("test-slow", "Status") == "missing"


def test_open_models_folder_creates_and_opens_it(qtbot, proj, models_root, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    dlg = ModelsDialog(proj)
    qtbot.addWidget(dlg)
    assert not models_root.exists()
    dlg.open_dir_btn.click()
    assert models_root.is_dir() and opened == [str(models_root)]


def test_tools_menu_opens_the_dialog_for_the_open_project(qtbot, proj, models_root, isolated_settings):
    from mikupal_gui.main_window import MainWindow

    win = MainWindow(QSettings(str(isolated_settings / "t.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    tools = [a for a in win.menuBar().actions() if a.text() == "&Tools"]
    assert tools and win.act_models in tools[0].menu().actions()
    win.act_models.trigger()  # no project yet: the default settings
    dlg = win.models_dialog
    assert dlg.isVisible() and not dlg.isModal() and dlg.project is None
    assert "default settings" in dlg.summary.text()
    assert win.open_project(proj.root)
    assert dlg.project is not None and dlg.project.root == proj.root and "dialog-test" in dlg.summary.text()
    win.act_models.trigger()
    assert win.models_dialog is dlg
    win.close()
