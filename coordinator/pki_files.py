"""The CA directory on disk and the trust a daemon loads: PEM files, written whole or not at all.

Layout of a CA directory made by ``landlord certs init DIR``::

    DIR/ca.pem   the CA certificate (give it to every daemon and CLI as the CA bundle)
    DIR/ca.key   the CA private key (0600; keep it off the fleet)
    DIR/crl.pem  the revocation list, re-signed by every ``landlord certs revoke``

Issued pairs default to ``DIR/<role>-<name>.pem`` and ``.key``. Every file is written to a
temporary file in the same directory and renamed into place, so a crash leaves the old file
or the new one, never half of one. Keys are 0600, certificates and the CRL 0644.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from common.errors import FailedPrecondition, InvalidArgument
from common.pki import (
    CertificateAuthority,
    Issued,
    cert_pem,
    crl_pem,
    key_pem,
    load_certificate,
    load_certificates,
    load_crl,
    load_private_key,
    new_ca,
    revoke,
)
from common.pki_check import Trust

__all__ = ["KEY_MODE", "PUBLIC_MODE", "CaFiles", "load_trust", "read_file", "write_file"]

KEY_MODE = 0o600
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class CaFiles:
    """Paths of one CA directory."""

    root: Path

    @property
    def cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def key(self) -> Path:
        return self.root / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    def leaf(self, role: str, name: str) -> tuple[Path, Path]:
        """(certificate, key) default paths of an issued identity."""
        return self.root / f"{role}-{name}.pem", self.root / f"{role}-{name}.key"

    def load(self) -> CertificateAuthority:
        if not self.key.exists():
            raise FailedPrecondition(
                f"{self.root} is not a CA directory (no ca.key); run `landlord certs init "
                f"{self.root}` first", path=str(self.root))
        cert = load_certificate(read_file(self.cert), str(self.cert))
        key = load_private_key(read_file(self.key), str(self.key))
        if key.public_key() != cert.public_key():
            raise FailedPrecondition(f"{self.key} does not belong to {self.cert}")
        return CertificateAuthority(key, cert)

    def create(self, name: str, now: datetime, days: int) -> CertificateAuthority:
        """A new CA written here: ca.key (0600), ca.pem and an empty crl.pem."""
        ca = new_ca(name, now, days)
        write_file(self.key, key_pem(ca.key), KEY_MODE)
        write_file(self.cert, cert_pem(ca.cert), PUBLIC_MODE)
        write_file(self.crl, crl_pem(revoke(ca, None, (), now)), PUBLIC_MODE)
        return ca

    @staticmethod
    def write_leaf(issued: Issued, cert_path: Path, key_path: Path) -> None:
        """An issued pair: the key (0600) first, then the certificate."""
        write_file(key_path, issued.key_pem, KEY_MODE)
        write_file(cert_path, issued.cert_pem, PUBLIC_MODE)

    def load_crl(self, ca: CertificateAuthority) -> x509.CertificateRevocationList | None:
        if not self.crl.exists():
            return None
        return load_crl(read_file(self.crl), str(self.crl), [ca.cert])


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path} does not exist", path=str(path)) from None
    except OSError as exc:
        raise FailedPrecondition(f"cannot read {path}: {exc.strerror}", path=str(path)) from None


def write_file(path: Path, data: bytes, mode: int, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``; refuse to replace unless told."""
    if not replace and path.exists():
        raise FailedPrecondition(f"{path} exists; pass --force to replace it", path=str(path))
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise FailedPrecondition(f"cannot write in {directory}: {exc.strerror}",
                                 path=str(path)) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise FailedPrecondition(f"cannot write {path}: {exc.strerror}", path=str(path)) from None


def load_trust(ca_file: str, crl_file: str = "") -> Trust:
    """The CA bundle and, when given, its CRL, as a daemon's interceptor checks peers."""
    cas = load_certificates(read_file(Path(ca_file)), ca_file)
    crls = (load_crl(read_file(Path(crl_file)), crl_file, cas),) if crl_file else ()
    return Trust(cas=tuple(cas), crls=crls)
