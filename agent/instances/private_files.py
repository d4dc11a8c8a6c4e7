"""Root-only files of the agent: 0600 files in 0700 directories, whatever the umask.

Instance records hold secret env values (to restart an instance while the coordinator is
away); dumps and backups hold an instance's logs and state. All of them are written
through here, so none is readable by another user on the host.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "open_private", "private_dir", "write_private"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, within: Path | None = None) -> Path:
    """Make ``path`` (and its missing parents) with ``DIR_MODE``, and set that mode on
    ``path`` and every directory between it and ``within`` that already existed."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    stop = within if within is not None else path
    current = path
    while True:
        os.chmod(current, DIR_MODE)
        if current == stop or current.parent == current:
            return path
        current = current.parent


def open_private(path: Path) -> int:
    """A new (or truncated) file with ``FILE_MODE``, opened for writing; a descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode through O_CREAT
    return fd


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` with ``FILE_MODE``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with os.fdopen(open_private(path), "wb") as out:
        out.write(raw)
