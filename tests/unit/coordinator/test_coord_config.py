"""Coordinator configuration: TOML, then environment, then flags; clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidArgument
from coordinator.config import CoordinatorConfig, load_config
from coordinator.main import main


def test_defaults() -> None:
    config = load_config([], env={})
    assert config.listen == "127.0.0.1:7400"
    assert config.etcd_endpoints == ("127.0.0.1:2379",)
    assert (config.heartbeat_interval, config.liveness_grace, config.leader_lease_ttl) == (
        10.0,
        10.0,
        5,
    )
    assert config.id.endswith("-7400") and config.advertise == config.listen


def test_toml_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'listen = "127.0.0.1:7500"\nheartbeat_interval = 2\n'
        'etcd_endpoints = ["127.0.0.1:1", "127.0.0.1:2"]\nid = "from-file"\n'
    )
    env = {
        "LANDLORD_COORDINATOR_HEARTBEAT_INTERVAL": "3.5",
        "LANDLORD_COORDINATOR_ETCD_PREFIX": "/env",
    }
    config = load_config(["--config", str(path), "--etcd-prefix", "/flag"], env=env)
    assert config.listen == "127.0.0.1:7500"
    assert config.etcd_endpoints == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.heartbeat_interval == 3.5
    assert config.etcd_prefix == "/flag"
    assert config.id == "from-file"
    config = load_config(
        ["--config", str(path)],
        env={"LANDLORD_COORDINATOR_ETCD_ENDPOINTS": "127.0.0.1:9,127.0.0.1:8"},
    )
    assert config.etcd_endpoints == ("127.0.0.1:9", "127.0.0.1:8")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--listen", "nowhere"], "not host:port"),
        (["--heartbeat-interval", "0"], "heartbeat_interval"),
        (["--heartbeat-interval", "soon"], "not a valid float"),
        (["--leader-lease-ttl", "1"], "leader_lease_ttl"),
        (["--etcd-prefix", "landlord"], "etcd_prefix"),
        (["--port-range-start", "30000", "--port-range-end", "20000"], "port range"),
        (["--tls-cert-file", "/nonexistent.pem"], "cert_file"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(argv: list[str], words: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        load_config(argv, env={})
    assert words in str(refused.value)


def test_unknown_toml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("hearbeat = 3\n")
    with pytest.raises(InvalidArgument, match="hearbeat"):
        load_config(["--config", str(path)], env={})


def test_main_prints_help_and_refuses_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--heartbeat-interval" in capsys.readouterr().out
    assert main(["--listen", "bad"]) == 2
    assert "not host:port" in capsys.readouterr().err


def test_frozen() -> None:
    config = CoordinatorConfig()
    with pytest.raises(AttributeError):
        config.listen = "x"  # type: ignore[misc]
