"""API keys for the annotator backends: the OS keyring, or the process environment.

Keys never touch the project folder, QSettings, logs or the database. A run reads them
from the keyring at start and hands them to the pipeline through os.environ, the same way
`GEMINI_API_KEY=... mikupal run` does on the command line.
"""
from __future__ import annotations

import os

SERVICE = "mikupal"

# environment variable -> what the settings dialog calls it
KEY_NAMES: dict[str, str] = {
    "GEMINI_API_KEY": "Gemini API key",
    "MIKUPAL_OPENAI_API_KEY": "OpenAI-compatible server key",
}
# Other variables the pipeline also accepts for the same key.
ALIASES: dict[str, tuple[str, ...]] = {"GEMINI_API_KEY": ("GOOGLE_API_KEY",)}


class KeyringUnavailable(RuntimeError):
    """No usable OS keyring; the message says to use the environment variable instead."""


def _keyring():
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None, "the keyring package is not installed"
    kr = keyring.get_keyring()
    if isinstance(kr, fail.Keyring) or getattr(kr, "priority", 1) <= 0:
        return None, "no OS keyring backend was found (e.g. GNOME Keyring, KWallet, macOS Keychain, Windows Credential Locker)"
    return kr, type(kr).__module__ + "." + type(kr).__name__


def keyring_status() -> tuple[bool, str]:
    """(usable, description): the backend's name, or why there is none."""
    kr, what = _keyring()
    return kr is not None, what


def env_value(name: str) -> str | None:
    for var in (name, *ALIASES.get(name, ())):
        if os.environ.get(var):
            return os.environ[var]
    return None


def stored_value(name: str) -> str | None:
    kr, _ = _keyring()
    if kr is None:
        return None
    try:
        return kr.get_password(SERVICE, name)
    except Exception:  # noqa: BLE001 - a locked or broken keyring reads as "not stored"
        return None


def source_of(name: str) -> str:
    """Where a run would take this key from: 'environment', 'keyring' or '' (nowhere)."""
    if env_value(name):
        return "environment"
    if stored_value(name):
        return "keyring"
    return ""


def store_key(name: str, value: str) -> None:
    kr, why = _keyring()
    if kr is None:
        raise KeyringUnavailable(f"cannot store the {KEY_NAMES.get(name, name)}: {why}; "
                                 f"set the environment variable {name} before starting MIKU-PAL instead")
    kr.set_password(SERVICE, name, value)


def forget_key(name: str) -> None:
    kr, _ = _keyring()
    if kr is None:
        return
    try:
        kr.delete_password(SERVICE, name)
    except Exception:  # noqa: BLE001 - nothing stored is fine
        pass


def export_to_environment() -> list[str]:
    """Put keyring keys into os.environ for a run (the environment wins when both exist).

    Returns the variable names that were set from the keyring."""
    done = []
    for name in KEY_NAMES:
        if env_value(name):
            continue
        value = stored_value(name)
        if value:
            os.environ[name] = value
            done.append(name)
    return done
