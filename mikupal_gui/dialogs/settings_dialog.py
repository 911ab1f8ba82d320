"""Settings: API keys (OS keyring, or the environment), never written to the project."""
from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
    QPushButton, QVBoxLayout, QWidget,
)

from .. import keys


class SettingsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(560, 300)
        lay = QVBoxLayout(self)
        ok, backend = keys.keyring_status()
        box = QGroupBox("API keys")
        form = QFormLayout(box)
        info = QLabel(
            (f"Keys are kept in the OS keyring ({backend}), never in the project folder."
             if ok else
             f"<b>No OS keyring is available</b>: {backend}.<br>Set the key in the environment before starting "
             "MIKU-PAL instead, e.g. <code>export GEMINI_API_KEY=…</code>.")
            + "<br>A key in the environment wins over the keyring.")
        info.setWordWrap(True)
        form.addRow(info)
        self.edits: dict[str, QLineEdit] = {}
        self.sources: dict[str, QLabel] = {}
        for name, title in keys.KEY_NAMES.items():
            edit = QLineEdit()
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setEnabled(ok)
            src = keys.source_of(name)
            edit.setPlaceholderText({"keyring": "stored in the keyring (type to replace)",
                                     "environment": f"set by ${name} in the environment"}.get(src, "not set"))
            forget = QPushButton("Forget")
            forget.setEnabled(ok and bool(keys.stored_value(name)))
            forget.clicked.connect(lambda _=False, n=name: self._forget(n))
            row = QWidget()
            rl = QHBoxLayout(row)
            rl.setContentsMargins(0, 0, 0, 0)
            rl.addWidget(edit, 1)
            rl.addWidget(forget)
            label = QLabel(self._source_text(name))
            label.setStyleSheet("color: palette(mid); font-size: 11px;")
            self.edits[name], self.sources[name] = edit, label
            form.addRow(title, row)
            form.addRow("", label)
        lay.addWidget(box)
        lay.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)

    @staticmethod
    def _source_text(name: str) -> str:
        src = keys.source_of(name)
        return {"environment": f"A run uses ${name} from the environment.",
                "keyring": "A run uses the key stored in the keyring."}.get(src, "No key: runs with this backend will stop with a clear error.")

    def _forget(self, name: str) -> None:
        keys.forget_key(name)
        self.sources[name].setText(self._source_text(name))

    def save(self) -> bool:
        try:
            for name, edit in self.edits.items():
                value = edit.text().strip()
                if value:
                    keys.store_key(name, value)
                    edit.clear()
        except keys.KeyringUnavailable as e:
            QMessageBox.warning(self, "No keyring", str(e))
            return False
        except Exception as e:  # noqa: BLE001 - a locked keyring etc.; never echo the key
            QMessageBox.warning(self, "Keyring error", f"the keyring refused the key ({type(e).__name__}); "
                                "unlock it or set the environment variable instead")
            return False
        self.accept()
        return True
