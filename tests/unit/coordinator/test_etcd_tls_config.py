"""etcd TLS settings: endpoint forms, which endpoints dial TLS, and the refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from common.errors import InvalidArgument
from common.pki import certificate_identity, issue_etcd_server, new_ca
from common.transport import TlsSettings
from coordinator.cli.main import app
from coordinator.config import load_config, split_etcd_endpoint
from coordinator.state.etcd_client import EtcdTarget, etcd_target


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("x")
        out[name] = str(path)
    return out


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("127.0.0.1:2379", ("", "127.0.0.1:2379")),
    ("https://etcd-1.example:2379", ("https", "etcd-1.example:2379")),
    ("http://127.0.0.1:2379/", ("http", "127.0.0.1:2379")),
])
def test_endpoint_forms(endpoint: str, expected: tuple[str, str]) -> None:
    assert split_etcd_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["unix:///run/etcd.sock", "https://etcd", "etcd:port"])
def test_bad_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(InvalidArgument, match="etcd endpoint"):
        split_etcd_endpoint(endpoint)
    with pytest.raises(InvalidArgument, match="etcd_endpoints"):
        load_config(["--etcd-endpoints", endpoint], env={})


def test_tls_is_used_for_https_or_when_files_are_set(files: dict[str, str]) -> None:
    plain, tls = TlsSettings(), TlsSettings(ca_file=files["ca"])
    assert etcd_target("127.0.0.1:2379", plain) == EtcdTarget("127.0.0.1:2379", secure=False)
    assert etcd_target("https://127.0.0.1:2379", plain).secure
    assert etcd_target("127.0.0.1:2379", tls).secure
    assert not etcd_target("http://127.0.0.1:2379", tls).secure
    target = etcd_target("https://etcd-1:2380", tls)
    assert (target.host, target.port) == ("etcd-1", 2380)


def test_settings_load_from_flags(files: dict[str, str]) -> None:
    config = load_config(["--etcd-endpoints", "https://127.0.0.1:2379", "--etcd-ca-file",
                          files["ca"], "--etcd-cert-file", files["cert"], "--etcd-key-file",
                          files["key"]], env={"LANDLORD_COORDINATOR_INSECURE": "true"})
    assert config.etcd_tls == TlsSettings(files["ca"], files["cert"], files["key"])


@pytest.mark.parametrize(("argv", "words"), [
    (["--etcd-cert-file", "{cert}"], "etcd_cert_file and etcd_key_file"),
    (["--etcd-key-file", "{key}"], "etcd_cert_file and etcd_key_file"),
    (["--etcd-ca-file", "/nonexistent.pem"], "etcd_ca_file '/nonexistent.pem' does not exist"),
    (["--etcd-ca-file", "{ca}", "--etcd-endpoints", "http://127.0.0.1:2379"], "say http://"),
])
def test_bad_tls_settings_are_refused(files: dict[str, str], argv: list[str],
                                      words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        load_config([a.format(**files) for a in argv], env={})


def test_etcd_server_certificate_serves_loopback_and_names_no_identity() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    ca = new_ca("test CA", now)
    cert = issue_etcd_server(ca, "etcd-1", now, days=10).cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert certificate_identity(cert) is None
    cert.verify_directly_issued_by(ca.cert)


def test_landlord_certs_issue_etcd_writes_a_server_certificate(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir = str(tmp_path / "ca")
    assert runner.invoke(app, ["certs", "init", ca_dir]).exit_code == 0
    result = runner.invoke(app, ["certs", "issue-etcd", "etcd-1", "--ca-dir", ca_dir,
                                 "--ip", "192.0.2.5", "--dns", "etcd-1.example"])
    assert result.exit_code == 0, result.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "ca" / "etcd-etcd-1.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["etcd-1.example"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.5"]
    assert (tmp_path / "ca" / "etcd-etcd-1.key").stat().st_mode & 0o077 == 0
    again = runner.invoke(app, ["certs", "issue-etcd", "etcd-1", "--ca-dir", ca_dir])
    assert again.exit_code == 1 and "--force" in again.stderr
    bad = runner.invoke(app, ["certs", "issue-etcd", "bad/name", "--ca-dir", ca_dir])
    assert bad.exit_code == 2 and "invalid" in bad.stderr
