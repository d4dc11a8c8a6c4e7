"""Records, dumps and backups are root-only (0600 files in 0700 directories) whatever the
umask, and records keep secret values (to restart an instance without the coordinator)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.instances.dumps import DumpWriter
from agent.instances.private_files import private_dir, write_private
from agent.instances.spec import InstanceSpec, Slot
from agent.instances.store import InstanceRecord, RecordStore
from common.clock import FakeClock
from common.lifecycle import LifecycleRecord


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    """The default umask of a service (0022) and worse: files would be world-readable."""
    old = os.umask(0o000)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_records_are_root_only_and_keep_secret_values(tmp_path: Path) -> None:
    (tmp_path / "instances").mkdir(mode=0o755)  # left by an older agent
    store = RecordStore(tmp_path)
    spec = InstanceSpec("shop", "web", "1.0.0", Slot.BLUE, "i1", "demo:1", 20001,
                        secret_env={"TOKEN": "hunter2-value"})
    store.save(InstanceRecord(spec, LifecycleRecord.new("1.0.0", FakeClock())))
    path = store.directory / "i1.json"
    assert mode(store.directory) == 0o700 and mode(path) == 0o600
    [loaded] = store.load_all()
    assert dict(loaded.spec.secret_env) == {"TOKEN": "hunter2-value"}


def test_dumps_are_root_only(tmp_path: Path) -> None:
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "status").write_text("VmRSS: 1 kB\n")
    writer = DumpWriter(tmp_path / "data", proc_root=tmp_path / "proc")
    crash = writer.write_crash("i1", 2, 1.0, exit_code=1, oom_killed=False, reason="crash",
                               logs="log", inspect={"Id": "c1"})
    memory = writer.write_memory("i1", 2, 2.0, pid=42, cgroup_memory_dir=None, samples=[],
                                 reason="leak")
    for directory in (crash, memory):
        files = list(directory.iterdir())
        assert files and all(mode(f) == 0o600 for f in files)
        for parent in (directory, directory.parent, tmp_path / "data" / "dumps"):
            assert mode(parent) == 0o700


def test_an_existing_file_gets_the_private_mode(tmp_path: Path) -> None:
    path = private_dir(tmp_path / "a" / "b", within=tmp_path / "a") / "f"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert mode(path) == 0o600 and path.read_text() == "new"
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
