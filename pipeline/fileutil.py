"""Small file/process helpers shared across the pipeline (stdlib only: cheap to import)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


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


@contextlib.contextmanager
def atomic_write(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `dest`; when the block ends cleanly it replaces `dest`.

    The temporary name is unique per writer (mkstemp), so concurrent writers of the same
    file never share one (each rename is atomic; the last one wins with a complete file).
    On any failure the temporary file is removed and `dest` is untouched. The suffix is
    kept, so writers that pick a format by extension (soundfile, PyAV) still can.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".part{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(dest: str | Path, text: str) -> None:
    """Write a whole text file so readers see the old or the new content, never half."""
    with atomic_write(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
