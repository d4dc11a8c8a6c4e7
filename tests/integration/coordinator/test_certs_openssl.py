"""Certificates from `landlord certs` as the real openssl binary sees them: an issued one
verifies against the CA, a revoked one fails the CRL check, a renewed one verifies again."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from coordinator.cli.main import app

runner = CliRunner()
OPENSSL = shutil.which("openssl") or "openssl"


def certs(*args: str) -> None:
    result = runner.invoke(app, ["certs", *args])
    assert result.exit_code == 0, result.stderr


def verify(ca: Path, cert: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPENSSL, "verify", "-CAfile", str(ca / "ca.pem"), *extra, str(cert)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_openssl_accepts_issued_and_refuses_revoked(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    certs("init", str(ca))
    certs("issue", "viewer", "bob", "--ca-dir", str(ca))
    certs("issue", "coordinator", "c1", "--ca-dir", str(ca), "--ip", "127.0.0.1")
    bob, c1 = ca / "viewer-bob.pem", ca / "coordinator-c1.pem"
    crl = ("-crl_check", "-CRLfile", str(ca / "crl.pem"))
    for cert in (bob, c1):
        assert verify(ca, cert).returncode == 0
        assert verify(ca, cert, *crl).returncode == 0, verify(ca, cert, *crl).stderr
    served = verify(ca, c1, "-purpose", "sslserver", "-verify_ip", "127.0.0.1")
    assert served.returncode == 0, served.stderr
    assert verify(ca, bob, "-purpose", "sslserver").returncode != 0  # people are clients only
    assert verify(ca, bob, "-purpose", "sslclient").returncode == 0

    certs("revoke", str(bob), "--ca-dir", str(ca))
    revoked = verify(ca, bob, *crl)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    assert verify(ca, c1, *crl).returncode == 0

    certs("renew", str(bob), "--ca-dir", str(ca))
    assert verify(ca, bob, *crl).returncode == 0
