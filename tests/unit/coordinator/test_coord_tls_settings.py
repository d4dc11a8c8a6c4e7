"""tls_crl_file and mutual TLS in the coordinator's settings (coordinator/config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidArgument
from coordinator.config import load_config


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    names = ("ca.pem", "server.pem", "server.key", "crl.pem")
    for name in names:
        (tmp_path / name).write_text("x")
    return {name: str(tmp_path / name) for name in names}


PLAIN_ETCD = {"LANDLORD_COORDINATOR_INSECURE": "true"}
"""The shared etcd of these tests is plain text on loopback."""


def test_crl_needs_mutual_tls(files: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as refused:
        load_config(["--tls-cert-file", files["server.pem"], "--tls-key-file",
                     files["server.key"], "--tls-crl-file", files["crl.pem"]], env={})
    assert "tls_crl_file needs mutual TLS" in str(refused.value)


def test_crl_file_must_exist(files: dict[str, str]) -> None:
    mutual = ["--tls-ca-file", files["ca.pem"], "--tls-cert-file", files["server.pem"],
              "--tls-key-file", files["server.key"]]
    with pytest.raises(InvalidArgument) as refused:
        load_config([*mutual, "--tls-crl-file", "/nonexistent/crl.pem"], env=PLAIN_ETCD)
    assert "tls_crl_file '/nonexistent/crl.pem' does not exist" in str(refused.value)
    config = load_config([*mutual, "--tls-crl-file", files["crl.pem"]], env=PLAIN_ETCD)
    assert config.mutual_tls and config.tls_crl_file == files["crl.pem"]


def test_mutual_tls_needs_all_three(files: dict[str, str]) -> None:
    server_only = load_config(["--tls-cert-file", files["server.pem"], "--tls-key-file",
                               files["server.key"]], env=PLAIN_ETCD)
    assert not server_only.mutual_tls
    assert not load_config([], env=PLAIN_ETCD).mutual_tls
    with pytest.raises(InvalidArgument, match="mutual TLS is required"):
        load_config(["--tls-cert-file", files["server.pem"], "--tls-key-file",
                     files["server.key"]], env={})
