from __future__ import annotations

from pathlib import Path

import pytest

from agent.dataplane import DataPlane, DataPlanePort, DataPlaneSettings
from common.errors import InvalidArgument

ONE_SOCKET = DataPlaneSettings(log_sockets=1)  # 0 would read /proc: not in a unit test


def test_the_facade_is_a_data_plane_port_and_files_live_under_haproxy() -> None:
    tmp_path = Path("/nonexistent/landlord")
    plane: DataPlanePort = DataPlane(tmp_path, "127.0.0.2", settings=ONE_SOCKET)  # mypy checks
    assert isinstance(plane, DataPlane)
    assert plane.paths.root == tmp_path / "haproxy"
    assert plane.host == "127.0.0.2"


def test_socket_paths_must_fit_a_unix_socket_address() -> None:
    tmp_path = Path("/nonexistent")
    with pytest.raises(InvalidArgument):
        DataPlane(tmp_path / ("x" * 120), "127.0.0.2", settings=ONE_SOCKET)


@pytest.mark.parametrize(
    "bad",
    [{"log_sockets": -1}, {"log_sockets": 33}, {"retries": 0}, {"version_header": "X Bad"}],
)
def test_settings_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument):
        DataPlaneSettings(**bad)  # type: ignore[arg-type]
