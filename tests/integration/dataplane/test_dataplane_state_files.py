"""The data plane's files and host probes (small file I/O, no HAProxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.dataplane import DataPlane
from agent.dataplane.haproxy_config import render_config
from agent.dataplane.model import DataPlaneSpec, ServerSpec, UnitSpec
from agent.dataplane.settings import (
    DataPlaneSettings,
    HaproxyPaths,
    log_sockets_for_host,
    threads_for_host,
)
from agent.dataplane.state_files import StateFiles
from common.errors import FailedPrecondition, InvalidArgument


@pytest.fixture
def files(tmp_path: Path) -> StateFiles:
    paths = HaproxyPaths(tmp_path)
    paths.maps_dir.mkdir()
    return StateFiles(paths)


def test_spec_survives_a_new_process_with_this_agents_address(files: StateFiles) -> None:
    assert files.load_spec("127.0.0.2") == DataPlaneSpec("127.0.0.2")
    unit = UnitSpec("web", 8080).with_server(ServerSpec("a", "127.0.0.3", 1, "1.0.0", 9))
    spec = DataPlaneSpec("127.0.0.2").with_unit(unit)
    files.save_spec(spec)
    again = StateFiles(files.paths).load_spec("127.0.0.9")
    assert again.advertise == "127.0.0.9" and again.units == spec.units


def test_unreadable_spec_is_reported(files: StateFiles) -> None:
    files.paths.spec_file.write_text("{not json")
    with pytest.raises(FailedPrecondition):
        files.load_spec("127.0.0.2")


def test_unchanged_text_is_not_rewritten(files: StateFiles) -> None:
    spec = DataPlaneSpec("127.0.0.2").with_unit(UnitSpec("web", 8080))
    rendered = render_config(spec, files.paths, DataPlaneSettings())
    files.save_rendered(rendered)
    config = files.paths.config
    first = config.stat().st_ino
    files.save_rendered(rendered)
    assert config.stat().st_ino == first  # same inode: no tmp + rename happened
    assert files.paths.map_file("web", "pin").read_text() == ""
    assert not list(files.paths.root.glob(".*.tmp"))


def test_only_real_state_dumps_are_kept(files: StateFiles) -> None:
    files.save_server_state("Unknown command.")
    assert not files.paths.state_file.exists()
    files.save_server_state("1\n# be_id be_name")
    assert files.paths.state_file.read_text() == "1\n# be_id be_name\n"
    assert files.running_skeleton() == ""
    files.save_running_skeleton("abc")
    assert StateFiles(files.paths).running_skeleton() == "abc"


def test_log_socket_count_follows_the_hosts_datagram_queue(tmp_path: Path) -> None:
    qlen = tmp_path / "max_dgram_qlen"
    qlen.write_text("512\n")
    assert log_sockets_for_host(qlen) == 1  # systemd's default: one exact stream
    qlen.write_text("10\n")
    assert log_sockets_for_host(qlen) == 16  # kernel default: spread for headroom
    assert log_sockets_for_host(tmp_path / "missing") == 16
    plane = DataPlane(tmp_path, "127.0.0.2", settings=DataPlaneSettings(log_sockets=3))
    assert plane.settings.log_sockets == 3
    assert DataPlane(tmp_path, "127.0.0.2").settings.log_sockets == log_sockets_for_host()


def test_haproxy_threads_are_a_quarter_of_the_cores_and_at_least_one(tmp_path: Path) -> None:
    assert [threads_for_host(n) for n in (1, 2, 4, 7, 8, 32)] == [1, 1, 1, 1, 2, 8]
    assert DataPlane(tmp_path, "127.0.0.2").settings.threads == threads_for_host()
    pinned = DataPlane(tmp_path, "127.0.0.2", settings=DataPlaneSettings(threads=3))
    assert pinned.settings.threads == 3
    with pytest.raises(InvalidArgument):
        DataPlaneSettings(threads=65)
