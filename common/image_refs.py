"""Image references and registry credentials, as Docker reads them.

A reference is ``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]``. Its first path component names a
registry when it holds a ``.`` or a ``:`` or is ``localhost`` (Docker's rule); otherwise the
reference is a bare local name (``landlord/demo-app:1.0.0``), which Landlord never resolves
through a registry: hosts must already hold it.

Credentials use Docker's ``config.json`` shape, so operators can reuse the file ``docker login``
writes: ``{"auths": {"127.0.0.1:5000": {"auth": base64("user:password")}}}`` (or ``username``
and ``password`` keys instead of ``auth``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidArgument

__all__ = [
    "MAX_REFERENCE",
    "ImageRef",
    "RegistryCredentials",
    "load_registry_credentials",
    "parse_image_ref",
]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_REGISTRY = re.compile(
    r"^(?:localhost|[A-Za-z0-9.-]+(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?)\Z")
MAX_REFERENCE = 512


@dataclass(frozen=True)
class ImageRef:
    """One parsed image reference."""

    registry: str
    """``host[:port]`` of the registry, or "" for a bare local name."""
    repository: str
    tag: str
    """The tag ("" when none was given; Docker then means ``latest``)."""
    digest: str
    """``sha256:<64 hex>`` or ""."""

    @property
    def name(self) -> str:
        """``[REGISTRY/]REPOSITORY`` without tag or digest."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    @property
    def in_registry(self) -> bool:
        return bool(self.registry)

    @property
    def tag_or_latest(self) -> str:
        return self.tag or "latest"

    def pinned(self, digest: str) -> str:
        """The reference that runs exactly ``digest``: ``NAME@sha256:...``."""
        if not _DIGEST.fullmatch(digest):
            raise InvalidArgument(f"{digest!r} is not a sha256 digest", field="image")
        return f"{self.name}@{digest}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image_ref(text: str) -> ImageRef:
    """Parse ``text`` or raise InvalidArgument saying what is wrong (image ids are not refs)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("image reference is empty", field="image")
    if len(text) > MAX_REFERENCE:
        raise InvalidArgument(f"image reference is longer than {MAX_REFERENCE} characters",
                              field="image")
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"image {text!r}: digest must be sha256:<64 hex digits>",
                              field="image")
    registry = ""
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _REGISTRY.fullmatch(first):
            raise InvalidArgument(f"image {text!r}: {first!r} is not a registry host[:port]",
                                  field="image")
        registry, rest = first, remainder
    repository, tag = rest, ""
    if ":" in rest.rsplit("/", 1)[-1]:
        repository, _, tag = rest.rpartition(":")
        if not _TAG.fullmatch(tag):
            raise InvalidArgument(f"image {text!r}: {tag!r} is not a valid tag", field="image")
    if not _REPOSITORY.fullmatch(repository):
        raise InvalidArgument(f"image {text!r}: {repository!r} is not a repository name "
                              "(lower-case letters, digits, separators . _ - and /)",
                              field="image")
    return ImageRef(registry, repository, tag, digest)


@dataclass(frozen=True)
class RegistryCredentials:
    """Username and password for one registry."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryCredentials(username={self.username!r}, password=<hidden>)"


def load_registry_credentials(path: str | Path) -> Mapping[str, RegistryCredentials]:
    """Read a Docker ``config.json``-style file into {registry host: credentials}.

    An empty ``path`` means no credentials. Errors name the file and the entry, never the secret.
    """
    if not str(path):
        return {}
    try:
        document = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidArgument(f"registry credentials {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"registry credentials {path}: not JSON ({exc.msg}, line "
                              f"{exc.lineno})") from None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise InvalidArgument(f"registry credentials {path}: expected an object with \"auths\"")
    out: dict[str, RegistryCredentials] = {}
    for host, entry in auths.items():
        key = _host_of(str(host))
        if not isinstance(entry, dict):
            raise InvalidArgument(f"registry credentials {path}: entry {host!r} is not an object")
        if "auth" in entry:
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidArgument(f"registry credentials {path}: entry {host!r}: auth is "
                                      "not base64 of user:password") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument(f"registry credentials {path}: entry {host!r}: auth is "
                                      "not base64 of user:password")
        else:
            username, password = str(entry.get("username", "")), str(entry.get("password", ""))
            if not username:
                raise InvalidArgument(f"registry credentials {path}: entry {host!r} has neither "
                                      "auth nor username")
        out[key] = RegistryCredentials(username, password)
    return out


def _host_of(key: str) -> str:
    """``https://host:port/v2/`` and ``host:port`` both name ``host:port``."""
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]
