"""A snapshot instance's state is copied to its successor without following links: a
container that plants ``/state/loot -> <a host file>`` gets a link, never the file."""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.gc.collector import GarbageCollector
from agent.instances.spec import InstanceSpec, Slot, StateMode
from agent.instances.state_copy import MAX_DEPTH, copy_state
from agent.stream.host_commands import HostCommands

SECRET = "root-only-secret-of-the-host"


class StateDirs:
    """The supervisor's one call _carry_state makes, on a temporary data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def state_host_dir(self, spec: InstanceSpec) -> Path:
        return self.root / "state" / spec.apartment / spec.unit / spec.instance_id


def carry(tmp_path: Path, plant: Any) -> Path:
    """Plant things in blue's state, then start green from it as the agent does."""
    dirs = StateDirs(tmp_path / "data")
    blue = InstanceSpec(apartment="a", unit="u", version="1.0.0", slot=Slot.BLUE,
                        instance_id="blue1", image="img:1", port=20001,
                        state_mode=StateMode.SNAPSHOT)
    green = replace(blue, instance_id="green1", slot=Slot.GREEN, port=20002)
    origin = dirs.state_host_dir(blue)
    origin.mkdir(parents=True)
    plant(origin)
    service: Any = SimpleNamespace(supervisor=dirs)
    sink: Any = SimpleNamespace()
    commands = HostCommands(service, None, sink)
    commands._carry_state(green, blue.instance_id)
    return dirs.state_host_dir(green)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file of the host outside every state directory (stands in for /etc/shadow)."""
    secret = tmp_path / "host" / "shadow"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    secret.chmod(0o600)
    return secret


def contents_without_following(root: Path) -> list[bytes]:
    found = []
    for dirpath, _, names in os.walk(root):  # os.walk does not follow links by default
        for name in names:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                found.append(path.read_bytes())
    return found


def test_a_planted_link_to_a_host_file_is_not_followed(tmp_path: Path, outside: Path) -> None:
    def plant(state: Path) -> None:
        (state / "data.db").write_text("rows")
        (state / "loot").symlink_to(outside)
        (state / "sub").mkdir()
        (state / "sub" / "more").symlink_to("../../../../../host/shadow")

    copied = carry(tmp_path, plant)
    assert (copied / "data.db").read_text() == "rows"
    assert (copied / "loot").is_symlink() and os.readlink(copied / "loot") == str(outside)
    assert (copied / "sub" / "more").is_symlink()
    assert all(SECRET.encode() not in data for data in contents_without_following(copied))


def test_a_planted_link_to_a_host_directory_is_not_walked(tmp_path: Path,
                                                          outside: Path) -> None:
    copied = carry(tmp_path, lambda state: (state / "etc").symlink_to(outside.parent))
    assert (copied / "etc").is_symlink()
    assert all(SECRET.encode() not in data for data in contents_without_following(copied))


def test_fifos_are_skipped_and_modes_kept(tmp_path: Path) -> None:
    def plant(state: Path) -> None:
        os.mkfifo(state / "pipe")  # opening it to read would block the agent's thread
        (state / "run.sh").write_text("#!/bin/sh\n")
        (state / "run.sh").chmod(0o751)
        (state / "private").mkdir(mode=0o710)

    copied = carry(tmp_path, plant)
    assert not (copied / "pipe").exists()
    assert stat.S_IMODE((copied / "run.sh").stat().st_mode) == 0o751
    assert stat.S_IMODE((copied / "private").stat().st_mode) == 0o710


def test_a_link_as_the_source_itself_is_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "state").symlink_to(outside.parent)
    with pytest.raises(OSError):
        copy_state(tmp_path / "state", tmp_path / "copy")


def test_directories_deeper_than_the_bound_are_skipped(tmp_path: Path) -> None:
    deep = tmp_path / "src"
    path = deep
    for _ in range(MAX_DEPTH + 3):
        path = path / "d"
    path.mkdir(parents=True)
    report = copy_state(deep, tmp_path / "dst")
    assert report.directories == MAX_DEPTH + 1 and len(report.skipped) == 1


def backup(tmp_path: Path, state: Path) -> tarfile.TarFile:
    """The collector's backup of ``state`` before it collects an instance, opened."""
    spec = InstanceSpec(apartment="a", unit="u", version="1.0.0", slot=Slot.BLUE,
                        instance_id="blue1", image="img:1", port=20001,
                        state_mode=StateMode.SNAPSHOT)
    collector: Any = SimpleNamespace(backups=tmp_path / "backups",
                                     sup=SimpleNamespace(clock=SimpleNamespace(now=lambda: 0.0)),
                                     config=SimpleNamespace(backup_retention=5))
    return tarfile.open(GarbageCollector._backup(collector, spec, state))


def test_a_backup_keeps_links_as_links_and_the_tree_as_it_was(tmp_path: Path,
                                                              outside: Path) -> None:
    state = tmp_path / "state"
    (state / "sub").mkdir(parents=True)
    (state / "sub" / "rows").write_text("rows")
    (state / "loot").symlink_to(outside)
    os.mkfifo(state / "pipe")
    with backup(tmp_path, state) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert set(members) == {"state", "state/sub", "state/sub/rows", "state/loot"}
        assert members["state/loot"].issym() and members["state/loot"].linkname == str(outside)
        reader = archive.extractfile("state/sub/rows")
        assert reader is not None and reader.read() == b"rows"


def test_a_file_swapped_for_a_link_during_the_backup_is_not_followed(
        tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container still runs while it is backed up: it may replace a file by a link
    between the walk's look at it and the open."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "data.db").write_text("x" * len(SECRET))  # the size tar records from the look
    real_stat, real_lstat = os.stat, os.lstat

    target = str(state / "data.db")

    def swap(name: Any) -> None:
        if str(name).endswith("data.db") and not stat.S_ISLNK(real_lstat(target).st_mode):
            os.unlink(target)
            os.symlink(str(outside), target)

    def stat_then_swap(name: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        info = real_stat(name, *args, **kwargs)
        swap(name)
        return info

    def lstat_then_swap(name: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        info = real_lstat(name, *args, **kwargs)
        swap(name)
        return info

    monkeypatch.setattr(os, "stat", stat_then_swap)
    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    with backup(tmp_path, state) as archive:
        monkeypatch.undo()
        for member in archive.getmembers():
            reader = archive.extractfile(member) if member.isfile() else None
            assert reader is None or SECRET.encode() not in reader.read(), member.name
