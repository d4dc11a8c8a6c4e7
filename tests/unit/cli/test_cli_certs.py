"""`landlord certs` in-process: the files it writes, their modes, and one-line errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from common.identity import Identity, Role
from common.pki import certificate_identity
from coordinator.cli.main import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ca"
    code, _, err = run("certs", "init", str(directory))
    assert code == 0, err
    return directory


def test_init_writes_ca_key_and_empty_crl(ca_dir: Path) -> None:
    assert mode(ca_dir / "ca.key") == 0o600
    assert mode(ca_dir / "ca.pem") == 0o644
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert list(crl) == []
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca.key", "ca.pem", "crl.pem"]
    code, _, err = run("certs", "init", str(ca_dir))
    assert code == 1 and "a CA is there already" in err


def test_issue_each_kind(ca_dir: Path) -> None:
    for kind, name, role in (("coordinator", "c1", Role.COORDINATOR), ("agent", "h1", Role.HOST),
                             ("admin", "alice", Role.ADMIN), ("viewer", "bob", Role.VIEWER)):
        code, out, err = run("certs", "issue", kind, name, "--ca-dir", str(ca_dir))
        assert code == 0, err
        pem, key = ca_dir / f"{role}-{name}.pem", ca_dir / f"{role}-{name}.key"
        assert certificate_identity(cert(pem)) == Identity(role, name)
        assert mode(key) == 0o600 and mode(pem) == 0o644
        assert f"landlord://{role}/{name}" in out
    sans = cert(ca_dir / "coordinator-c1.pem").extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_issue_scoped_with_sans_to_out(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "keys" / "carol"
    code, _, err = run("certs", "issue", "admin", "carol", "--ca-dir", str(ca_dir),
                       "--apartments", "shop, blog", "--days", "7", "--out", str(out),
                       "--dns", "carol.example")
    assert code == 0, err
    issued = cert(out.with_name("carol.pem"))
    assert certificate_identity(issued) == Identity(Role.ADMIN, "carol",
                                                    frozenset({"shop", "blog"}))
    assert mode(out.with_name("carol.key")) == 0o600


def test_revoke_and_renew(ca_dir: Path) -> None:
    assert run("certs", "issue", "agent", "h1", "--ca-dir", str(ca_dir), "--days", "9")[0] == 0
    pem = ca_dir / "host-h1.pem"
    old = cert(pem)
    old_key = (ca_dir / "host-h1.key").read_bytes()
    code, out, err = run("certs", "renew", str(pem), "--ca-dir", str(ca_dir))
    assert code == 0, err
    new = cert(pem)
    assert new.serial_number != old.serial_number
    assert certificate_identity(new) == Identity(Role.HOST, "h1")
    assert (new.not_valid_after_utc - new.not_valid_before_utc).days == 9
    assert (ca_dir / "host-h1.key").read_bytes() != old_key
    code, out, err = run("certs", "revoke", str(pem), "--ca-dir", str(ca_dir))
    assert code == 0, err
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(new.serial_number) is not None
    assert "revoked host/h1" in out
    # no temporary files left behind
    assert not [p for p in ca_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (("issue", "viewer", "x y"), 2, "identity name 'x y' is invalid"),
    (("issue", "agent", "h1", "--apartments", "a"), 2, "--apartments applies to admin"),
    (("issue", "admin", "a", "--apartments", "Shop"), 2, "apartment 'Shop'"),
    (("issue", "viewer", "v", "--days", "0"), 2, "--days must be at least 1"),
    (("issue", "coordinator", "c", "--ip", "nope"), 2, "'nope' is not an IP address"),
    (("revoke", "missing.pem"), 2, "missing.pem does not exist"),
    (("renew", "missing.pem"), 2, "missing.pem does not exist"),
])
def test_errors_are_one_line(ca_dir: Path, args: tuple[str, ...], code: int,
                             fragment: str) -> None:
    exit_code, _, err = run("certs", *args, "--ca-dir", str(ca_dir))
    assert exit_code == code, err
    assert err.startswith("landlord: error: ") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err


def test_not_a_ca_dir_and_existing_files(ca_dir: Path, tmp_path: Path) -> None:
    code, _, err = run("certs", "issue", "viewer", "v", "--ca-dir", str(tmp_path / "none"))
    assert code == 1 and "is not a CA directory" in err
    assert run("certs", "issue", "viewer", "v", "--ca-dir", str(ca_dir))[0] == 0
    code, _, err = run("certs", "issue", "viewer", "v", "--ca-dir", str(ca_dir))
    assert code == 1 and "exists; pass --force" in err
    assert run("certs", "issue", "viewer", "v", "--ca-dir", str(ca_dir), "--force")[0] == 0


def test_foreign_certificate_refused(tmp_path: Path) -> None:
    """Even from a CA of the same name: the signature decides, not the issuer's name."""
    ca_dir, other = tmp_path / "ca", tmp_path / "other"
    assert run("certs", "init", str(ca_dir), "--name", "Same")[0] == 0
    assert run("certs", "init", str(other), "--name", "Same")[0] == 0
    assert run("certs", "issue", "viewer", "v", "--ca-dir", str(other))[0] == 0
    for command in ("revoke", "renew"):
        code, _, err = run("certs", command, str(other / "viewer-v.pem"), "--ca-dir", str(ca_dir))
        assert code == 1 and "was not issued by the CA" in err, err
