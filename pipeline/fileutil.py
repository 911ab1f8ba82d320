"""Two small file/process helpers shared across the pipeline (stdlib only: cheap to import)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (bounded memory for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists. Windows has no safe probe (os.kill there
    terminates), so callers are told it is alive and keep what belongs to it."""
    if not pid:
        return False
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
