"""Coordinator configuration: TOML, then environment, then flags; clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidArgument
from coordinator.config import CoordinatorConfig, load_config
from coordinator.main import main

PLAIN = {"LANDLORD_COORDINATOR_INSECURE": "true"}
"""Plain text on loopback: these tests are about other settings than TLS."""


def test_defaults() -> None:
    config = load_config([], env=PLAIN)
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
        "LANDLORD_COORDINATOR_ETCD_PREFIX": "/env", **PLAIN,
    }
    config = load_config(["--config", str(path), "--etcd-prefix", "/flag"], env=env)
    assert config.listen == "127.0.0.1:7500"
    assert config.etcd_endpoints == ("127.0.0.1:1", "127.0.0.1:2")
    assert config.heartbeat_interval == 3.5
    assert config.etcd_prefix == "/flag"
    assert config.id == "from-file"
    config = load_config(
        ["--config", str(path)],
        env={"LANDLORD_COORDINATOR_ETCD_ENDPOINTS": "127.0.0.1:9,127.0.0.1:8", **PLAIN},
    )
    assert config.etcd_endpoints == ("127.0.0.1:9", "127.0.0.1:8")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--listen", "nowhere"], "not host:port"),
        (["--heartbeat-interval", "0"], "heartbeat_interval"),
        (["--heartbeat-interval", "soon"], "heartbeat_interval: 'soon' is not a number"),
        (["--event-history", "9"], "--event-history: event_history must be >= 10, got 9"),
        (["--etcd-endpoints", ""], "at least one endpoint"),
        (["--log-format", "xml"], "log_format 'xml' is not one of json, text"),
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
    path.write_text("hearbeat_interval = 3\n")
    with pytest.raises(InvalidArgument, match="hearbeat_interval: unknown setting "
                                              r"\(did you mean heartbeat_interval\?\)"):
        load_config(["--config", str(path)], env={})


def test_the_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[coordinator]\netcd_prefix = "/env-file"\n[agent]\nhost_id = "h"\n')
    config = load_config([], env={"LANDLORD_COORDINATOR_CONFIG": str(path), **PLAIN})
    assert config.etcd_prefix == "/env-file"


def test_check_config_prints_toml_that_loads_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check-config", "--etcd-endpoints", "127.0.0.1:1,127.0.0.1:2",
                 "--id", "c9", "--insecure"]) == 0
    path = tmp_path / "effective.toml"
    path.write_text(capsys.readouterr().out)
    assert load_config(["--config", str(path)], env={}) == load_config(
        ["--etcd-endpoints", "127.0.0.1:1,127.0.0.1:2", "--id", "c9"], env=PLAIN)


def test_check_config_lists_every_problem_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('listen = 7400\nleader_lease_ttl = 1\nbogus = true\ninsecure = true\n')
    assert main(["--config", str(path), "--check-config", "--report-interval", "-1"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"landlord-coordinator: {path}:listen: listen: expected a string, got an integer (7400)",
        f"landlord-coordinator: {path}:bogus: unknown setting",
        f"landlord-coordinator: {path}:leader_lease_ttl: leader_lease_ttl must be >= 2, got 1",
        "landlord-coordinator: --report-interval: report_interval must be > 0, got -1",
    ]
    assert main(["--config", str(tmp_path / "absent.toml")]) == 2
    assert capsys.readouterr().err == (f"landlord-coordinator: {tmp_path / 'absent.toml'}: "
                                       "no such config file\n")


def test_main_prints_help_and_refuses_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--heartbeat-interval" in capsys.readouterr().out
    assert main(["--listen", "bad"]) == 2
    assert "not host:port" in capsys.readouterr().err


def test_frozen() -> None:
    config = CoordinatorConfig(insecure=True)
    with pytest.raises(AttributeError):
        config.listen = "x"  # type: ignore[misc]


def test_tls_is_required_unless_insecure_and_plain_text_stays_on_loopback() -> None:
    with pytest.raises(InvalidArgument) as refused:
        load_config([], env={})
    assert "mutual TLS is required" in str(refused.value)
    assert "etcd 127.0.0.1:2379 would be reached in plain text" in str(refused.value)
    with pytest.raises(InvalidArgument, match=r"refused on 0\.0\.0\.0:7400"):
        load_config(["--listen", "0.0.0.0:7400"], env=PLAIN)
    with pytest.raises(InvalidArgument, match=r"refused for 192\.0\.2\.7:2379"):
        load_config(["--etcd-endpoints", "192.0.2.7:2379"], env=PLAIN)
    assert load_config(["--etcd-endpoints", "localhost:2379,http://127.0.0.2:2379"],
                       env=PLAIN).insecure
