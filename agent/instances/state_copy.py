"""Copy an instance's state directory without ever following a link out of it.

The agent runs as root and the state belongs to a container, which may plant anything in
it: a symlink to ``/etc/shadow``, a directory swapped for a link while the copy runs, a
FIFO that blocks whoever opens it. ``shutil.copytree`` follows links by default, so the
next instance would get a copy of the host's file. Here every name is opened relative to
its parent directory's descriptor with ``O_NOFOLLOW``, so a link is never followed even if
it appears after the directory was listed:

- a symbolic link is recreated as the same link (its target text; never read through);
- a directory is opened with ``O_DIRECTORY | O_NOFOLLOW`` and copied recursively;
- a regular file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and copied only when
  ``fstat`` of the open descriptor says it is still a regular file;
- anything else (FIFO, socket, device), and directories deeper than ``MAX_DEPTH``, are
  skipped.

Modes, owners and modification times are kept (as ``cp -a``), owners only when the agent
may set them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CopyReport", "copy_state"]

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
MAX_DEPTH = 128
"""Directory levels copied; deeper ones are skipped (each level holds two descriptors)."""


@dataclass
class CopyReport:
    """What a copy did: counts, and the names it skipped with why."""

    files: int = 0
    directories: int = 0
    links: int = 0
    skipped: list[str] = field(default_factory=list)


def copy_state(origin: Path, target: Path) -> CopyReport:
    """Copy directory ``origin`` to ``target`` (which must not exist) as the module says.

    ``origin`` itself must be a real directory, not a link (OSError otherwise).
    """
    report = CopyReport()
    src = os.open(origin, _DIR_FLAGS)
    try:
        info = os.fstat(src)
        os.mkdir(target, 0o700)
        dst = os.open(target, _DIR_FLAGS)
        try:
            _copy_dir(src, dst, "", report, 0)
            _keep_metadata(dst, info)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    if report.skipped:
        log.warning("state copy %s -> %s skipped %d entr(ies): %s", origin, target,
                    len(report.skipped), "; ".join(report.skipped[:10]))
    return report


def _copy_dir(src: int, dst: int, where: str, report: CopyReport, depth: int) -> None:
    report.directories += 1
    for name in os.listdir(src):
        shown = f"{where}{name}"
        try:
            info = os.stat(name, dir_fd=src, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
                with contextlib.suppress(PermissionError):
                    os.chown(name, info.st_uid, info.st_gid, dir_fd=dst, follow_symlinks=False)
                report.links += 1
            elif stat.S_ISDIR(info.st_mode) and depth >= MAX_DEPTH:
                report.skipped.append(f"{shown}: deeper than {MAX_DEPTH} directories")
            elif stat.S_ISDIR(info.st_mode):
                _copy_subdir(src, dst, name, f"{shown}/", report, depth + 1)
            elif stat.S_ISREG(info.st_mode):
                _copy_file(src, dst, name, shown, report)
            else:
                report.skipped.append(f"{shown}: not a file, directory or link")
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
                raise
            # swapped for a link (ELOOP, ENOTDIR) or removed while the copy ran
            report.skipped.append(f"{shown}: changed during the copy ({exc.strerror})")


def _copy_subdir(src: int, dst: int, name: str, shown: str, report: CopyReport,
                 depth: int) -> None:
    child = os.open(name, _DIR_FLAGS, dir_fd=src)
    try:
        info = os.fstat(child)
        os.mkdir(name, 0o700, dir_fd=dst)
        out = os.open(name, _DIR_FLAGS, dir_fd=dst)
        try:
            _copy_dir(child, out, shown, report, depth)
            _keep_metadata(out, info)
        finally:
            os.close(out)
    finally:
        os.close(child)


def _copy_file(src: int, dst: int, name: str, shown: str, report: CopyReport) -> None:
    fd = os.open(name, _FILE_FLAGS, dir_fd=src)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            report.skipped.append(f"{shown}: no longer a regular file")
            return
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=dst)
        try:
            with open(fd, "rb", closefd=False) as reader, \
                    open(out, "wb", closefd=False) as writer:
                shutil.copyfileobj(reader, writer, _CHUNK)
            _keep_metadata(out, info)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    report.files += 1


def _keep_metadata(fd: int, info: os.stat_result) -> None:
    with contextlib.suppress(PermissionError):
        os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
