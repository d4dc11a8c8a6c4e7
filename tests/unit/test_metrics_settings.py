"""Both daemons' metrics settings: loopback defaults on their own ports, off when empty,
refused off loopback without TLS, from the environment as from a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.config import load_config as load_agent
from common.settings import ConfigInvalid
from common.transport import COORDINATOR_PORT
from coordinator.config import CoordinatorConfig
from coordinator.config import load_config as load_coordinator


def test_defaults_are_loopback_on_distinct_ports() -> None:
    coordinator = CoordinatorConfig(insecure=True).metrics_endpoint
    agent = AgentConfig(host_id="h").metrics_endpoint
    assert (coordinator.listen, coordinator.scheme) == ("127.0.0.1:7401", "http")
    assert (agent.listen, agent.scheme) == ("127.0.0.1:7402", "http")
    assert COORDINATOR_PORT not in (7401, 7402)


def test_empty_turns_the_endpoint_off() -> None:
    assert not AgentConfig(host_id="h", metrics_listen="").metrics_endpoint.enabled
    assert not CoordinatorConfig(insecure=True, metrics_listen="").metrics_endpoint.enabled


def test_off_loopback_without_tls_is_a_config_error() -> None:
    with pytest.raises(ConfigInvalid, match=re.escape("metrics_listen '0.0.0.0:7402' is "
                                                      "not a loopback address")):
        load_agent(environ={"LANDLORD_AGENT_HOST_ID": "h",
                            "LANDLORD_AGENT_METRICS_LISTEN": "0.0.0.0:7402"})
    with pytest.raises(ConfigInvalid, match="off loopback the endpoint needs TLS"):
        load_coordinator(["--metrics-listen", "192.0.2.1:7401"], env={})


def test_off_loopback_with_tls_serves_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    config = CoordinatorConfig(insecure=True, metrics_listen="0.0.0.0:7401",
                               metrics_tls_cert_file=str(cert),
                               metrics_tls_key_file=str(key))
    endpoint = config.metrics_endpoint
    assert endpoint.scheme == "https" and endpoint.tls.cert_file == str(cert)
    assert not endpoint.tls.ca_file
