"""Agent configuration: TOML, then environment, then flags; validated once."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config
from common.errors import InvalidArgument


def test_flags_beat_environment_beat_toml(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text(
        '[agent]\nhost_id = "from-toml"\nbuilding = "b1"\n'
        'reserved_memory = "1Gi"\ncoordinators = ["127.0.0.1:7000"]\n'
    )
    env = {
        "LANDLORD_AGENT_HOST_ID": "from-env",
        "LANDLORD_AGENT_CRASH_DELAY": "0.5",
        "LANDLORD_AGENT_BANDWIDTH": "off",
        "LANDLORD_AGENT_INSECURE": "yes",
        "OTHER": "ignored",
    }
    config = load_config(
        toml,
        env,
        {
            "host_id": "from-flag",
            "advertise_address": "127.0.0.3",
            "network_capacity": "10mbit",
            "building": None,
        },
    )
    assert config.host_id == "from-flag" and config.building == "b1"
    assert config.reserved_memory == 1024**3 and config.crash_delay == 0.5
    assert config.bandwidth is False and config.network_capacity == 10_000_000
    assert config.coordinators == ("127.0.0.1:7000",)
    assert config.advertise_address == "127.0.0.3"
    policy = config.recovery_policy()
    assert policy.crash.max_retries == 3 and policy.crash.delay_s == 0.5


def test_defaults_follow_the_plan() -> None:
    config = AgentConfig(host_id="h")
    assert (config.gc_idle_interval, config.gc_memory_interval, config.gc_cache_interval) == (
        1800.0,
        300.0,
        3600.0,
    )
    assert (config.disk_high_watermark, config.disk_low_watermark) == (0.85, 0.80)
    assert config.keep_versions == 3 and config.stop_grace == 30.0
    assert config.recovery_policy().leak.max_retries == 1


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_config(
            None,
            {"LANDLORD_AGENT_ADVERTISE_ADDRESS": "not-an-ip"},
            {"labels": "novalue", "disk_low_watermark": "0.9"},
        )
    assert caught.value.context["problems"] == [
        "LANDLORD_AGENT_ADVERTISE_ADDRESS: advertise_address: 'not-an-ip' is not an IP address",
        "--labels: labels: label 'novalue' must be KEY=VALUE",
        "--disk-low-watermark: need disk_low_watermark < disk_high_watermark",
    ]


def test_host_id_defaults_to_the_hostname() -> None:
    assert load_config(None, {}).host_id == socket.gethostname()
    assert AgentConfig().host_id == socket.gethostname()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LANDLORD_AGENT_NOPE": "1"}, "LANDLORD_AGENT_NOPE: unknown setting"),
        ({"LANDLORD_AGENT_HOST": "1"}, "unknown setting (did you mean HOST_ID?)"),
        ({"LANDLORD_AGENT_CRASH_DELAY": "soon"}, "crash_delay: 'soon' is not a number"),
        ({"LANDLORD_AGENT_RESERVED_MEMORY": "5m"}, "reserved_memory: '5m' is not valid"),
        ({"LANDLORD_AGENT_HAPROXY_THREADS": "65"}, "haproxy_threads must be <= 64, got 65"),
        ({"LANDLORD_AGENT_HAPROXY_THREADS": "-1"}, "haproxy_threads must be >= 0, got -1"),
        ({"LANDLORD_AGENT_KEEP_VERSIONS": "0"}, "keep_versions must be >= 1"),
        ({"LANDLORD_AGENT_MONITOR_INTERVAL": "0"}, "monitor_interval must be > 0"),
        ({"LANDLORD_AGENT_LOG_FORMAT": "xml"}, "log_format 'xml' is not one of json, text"),
        ({"LANDLORD_AGENT_COORDINATORS": "a:1,b"}, "coordinators: 'b' is not host:port"),
        ({"LANDLORD_AGENT_TLS_CERT_FILE": "/x.pem"}, "both cert_file and key_file"),
    ],
)
def test_bad_values_are_refused_with_their_name(env: dict[str, str], needle: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        load_config(None, {"LANDLORD_AGENT_HOST_ID": "h", **env})
    assert needle in str(caught.value)
    assert str(caught.value).count(next(iter(env))) == 1


def test_unknown_and_mistyped_toml_keys_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "agent.toml"
    toml.write_text('host_id = "h"\nhostid = "typo"\nbandwidth = "no"\n')
    with pytest.raises(InvalidArgument) as caught:
        load_config(toml)
    assert caught.value.context["problems"] == [
        f"{toml}:hostid: unknown setting (did you mean host_id?)",
        f"{toml}:bandwidth: bandwidth: expected true or false, got a string ('no')",
    ]


def test_coordinators_need_mutual_tls_unless_insecure_on_loopback() -> None:
    with pytest.raises(InvalidArgument, match="mutual TLS is required to reach coordinators"):
        load_config(None, {"LANDLORD_AGENT_COORDINATORS": "127.0.0.1:7400"})
    plain = {"LANDLORD_AGENT_COORDINATORS": "127.0.0.1:7400", "LANDLORD_AGENT_INSECURE": "1"}
    assert load_config(None, plain).insecure
    with pytest.raises(InvalidArgument, match=r"refused to 192\.0\.2\.9:7400"):
        load_config(None, {**plain, "LANDLORD_AGENT_COORDINATORS": "192.0.2.9:7400"})
    assert not load_config(None, {}).insecure  # standalone: no stream, nothing to secure
