"""Copy or archive an instance's state directory without ever following a link out of it.

The agent runs as root and the state belongs to a container, which may plant anything in
it, and keeps running while it is copied (green starts from blue's state) or backed up
(before collection): a symlink to ``/etc/shadow``, a directory or file swapped for a link
while the walk runs, a FIFO that blocks whoever opens it. ``shutil.copytree`` follows
links by default, so the next instance would get a copy of the host's file; ``tarfile``
checks with ``lstat`` and then opens by name, so a swap in between gets the host's file
into the backup. Here every name is opened relative to its parent directory's descriptor
with ``O_NOFOLLOW``, so a link is never followed even if it appears after the listing:

- a symbolic link is kept as the same link (its target text; never read through);
- a directory is opened with ``O_DIRECTORY | O_NOFOLLOW`` and walked;
- a regular file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and read only when ``fstat``
  of the open descriptor says it is still a regular file;
- anything else (FIFO, socket, device), and directories deeper than ``MAX_DEPTH``, are
  skipped, each named in the report.

A copy keeps modes, owners and modification times (as ``cp -a``), owners only when the
agent may set them; an archive records them in each tar member.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["MAX_DEPTH", "CopyReport", "archive_state", "copy_state"]

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
MAX_DEPTH = 128
"""Directory levels walked; deeper ones are skipped (each level holds descriptors)."""


@dataclass
class CopyReport:
    """What a walk did: counts, and the names it skipped with why."""

    files: int = 0
    directories: int = 0
    links: int = 0
    skipped: list[str] = field(default_factory=list)


class _Visitor(Protocol):
    """What a walk does with each entry of one directory (``name`` relative to it)."""

    def link(self, name: str, target: str, info: os.stat_result) -> None: ...

    def file(self, name: str, fd: int, info: os.stat_result) -> None: ...

    def directory(self, name: str, info: os.stat_result) -> _Visitor:
        """The visitor of the directory's own entries."""
        ...

    def done(self, info: os.stat_result) -> None:
        """After every entry of this visitor's directory."""
        ...


def copy_state(origin: Path, target: Path) -> CopyReport:
    """Copy directory ``origin`` to ``target`` (which must not exist) as the module says.

    ``origin`` itself must be a real directory, not a link (OSError otherwise).
    """
    report = CopyReport()
    src = os.open(origin, _DIR_FLAGS)
    try:
        os.mkdir(target, 0o700)
        visitor = _CopyInto(os.open(target, _DIR_FLAGS))
        _walk_root(src, visitor, report, f"state copy {origin} -> {target}")
    finally:
        os.close(src)
    return report


def archive_state(origin: Path, archive: tarfile.TarFile, arcname: str) -> CopyReport:
    """Add directory ``origin`` to ``archive`` under ``arcname`` as the module says."""
    report = CopyReport()
    src = os.open(origin, _DIR_FLAGS)
    try:
        visitor = _AddTo(archive, arcname)
        archive.addfile(visitor.member("", tarfile.DIRTYPE, os.fstat(src)))
        _walk_root(src, visitor, report, f"state backup of {origin}")
    finally:
        os.close(src)
    return report


def _walk_root(src: int, visitor: _Visitor, report: CopyReport, what: str) -> None:
    info = os.fstat(src)
    try:
        _walk(src, visitor, "", report, 0)
    finally:
        visitor.done(info)
    if report.skipped:
        log.warning("%s skipped %d entr(ies): %s", what, len(report.skipped),
                    "; ".join(report.skipped[:10]))


def _walk(src: int, visitor: _Visitor, where: str, report: CopyReport, depth: int) -> None:
    report.directories += 1
    for name in sorted(os.listdir(src)):
        shown = f"{where}{name}"
        try:
            info = os.stat(name, dir_fd=src, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                visitor.link(name, os.readlink(name, dir_fd=src), info)
                report.links += 1
            elif stat.S_ISDIR(info.st_mode) and depth >= MAX_DEPTH:
                report.skipped.append(f"{shown}: deeper than {MAX_DEPTH} directories")
            elif stat.S_ISDIR(info.st_mode):
                _walk_subdir(src, visitor, name, f"{shown}/", report, depth + 1)
            elif stat.S_ISREG(info.st_mode):
                _visit_file(src, visitor, name, shown, report)
            else:
                report.skipped.append(f"{shown}: not a file, directory or link")
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
                raise
            # swapped for a link (ELOOP, ENOTDIR) or removed while the walk ran
            report.skipped.append(f"{shown}: changed during the walk ({exc.strerror})")


def _walk_subdir(src: int, visitor: _Visitor, name: str, shown: str, report: CopyReport,
                 depth: int) -> None:
    child = os.open(name, _DIR_FLAGS, dir_fd=src)
    try:
        info = os.fstat(child)
        inner = visitor.directory(name, info)
        try:
            _walk(child, inner, shown, report, depth)
        finally:
            inner.done(info)
    finally:
        os.close(child)


def _visit_file(src: int, visitor: _Visitor, name: str, shown: str,
                report: CopyReport) -> None:
    fd = os.open(name, _FILE_FLAGS, dir_fd=src)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            report.skipped.append(f"{shown}: no longer a regular file")
            return
        visitor.file(name, fd, info)
    finally:
        os.close(fd)
    report.files += 1


class _CopyInto:
    """Recreates each entry in the directory open as ``dst`` (closed by ``done``)."""

    def __init__(self, dst: int) -> None:
        self.dst = dst

    def link(self, name: str, target: str, info: os.stat_result) -> None:
        os.symlink(target, name, dir_fd=self.dst)
        with contextlib.suppress(PermissionError):
            os.chown(name, info.st_uid, info.st_gid, dir_fd=self.dst, follow_symlinks=False)

    def file(self, name: str, fd: int, info: os.stat_result) -> None:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=self.dst)
        try:
            with open(fd, "rb", closefd=False) as reader, \
                    open(out, "wb", closefd=False) as writer:
                shutil.copyfileobj(reader, writer, _CHUNK)
            _keep_metadata(out, info)
        finally:
            os.close(out)

    def directory(self, name: str, info: os.stat_result) -> _Visitor:
        os.mkdir(name, 0o700, dir_fd=self.dst)
        return _CopyInto(os.open(name, _DIR_FLAGS, dir_fd=self.dst))

    def done(self, info: os.stat_result) -> None:
        try:
            _keep_metadata(self.dst, info)
        finally:
            os.close(self.dst)


class _AddTo:
    """Adds each entry to ``archive`` under ``prefix`` from what was opened, not by name."""

    def __init__(self, archive: tarfile.TarFile, prefix: str) -> None:
        self.archive = archive
        self.prefix = prefix

    def member(self, name: str, kind: bytes, info: os.stat_result) -> tarfile.TarInfo:
        member = tarfile.TarInfo(f"{self.prefix}/{name}" if name else self.prefix)
        member.type = kind
        member.mode = stat.S_IMODE(info.st_mode)
        member.uid, member.gid = info.st_uid, info.st_gid
        member.mtime = int(info.st_mtime)
        return member

    def link(self, name: str, target: str, info: os.stat_result) -> None:
        member = self.member(name, tarfile.SYMTYPE, info)
        member.linkname = target
        self.archive.addfile(member)

    def file(self, name: str, fd: int, info: os.stat_result) -> None:
        member = self.member(name, tarfile.REGTYPE, info)
        member.size = info.st_size
        with open(fd, "rb", closefd=False) as reader:
            self.archive.addfile(member, reader)

    def directory(self, name: str, info: os.stat_result) -> _Visitor:
        self.archive.addfile(self.member(name, tarfile.DIRTYPE, info))
        return _AddTo(self.archive, f"{self.prefix}/{name}")

    def done(self, info: os.stat_result) -> None:
        pass


def _keep_metadata(fd: int, info: os.stat_result) -> None:
    with contextlib.suppress(PermissionError):
        os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
