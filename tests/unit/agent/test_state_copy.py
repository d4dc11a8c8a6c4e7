"""A snapshot instance's state is copied to its successor without following links: a
container that plants ``/state/loot -> <a host file>`` gets a link, never the file."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

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
