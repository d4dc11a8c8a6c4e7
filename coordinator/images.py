"""The pure parts of resolving an image tag to its digest through a registry's HTTP API.

Decisions without I/O (``coordinator/images_client.py`` does the requests): which manifest
media types we accept, how a registry is reached (HTTPS; loopback registries as Docker
does, HTTPS first and plain HTTP when they do not speak TLS; plain HTTP for those the
operator lists), how a ``WWW-Authenticate`` challenge reads, where the token of a
Bearer challenge comes from, and how a manifest body gives its digest.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from common.image_refs import ImageRef
from common.transport.settings import is_loopback

__all__ = [
    "MANIFEST_ACCEPT",
    "MANIFEST_TYPES",
    "Challenge",
    "digest_of",
    "is_digest",
    "manifest_url",
    "parse_challenge",
    "registry_base_urls",
    "registry_error_text",
    "single_digest",
    "token_url",
]

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
"""Manifests whose digest a version may record: Docker v2 and OCI, single images and
multi-platform lists (Docker picks the platform from a list when it pulls)."""

MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES)
"""The ``Accept`` header of a manifest request. Without it a registry may answer a
schema-1 manifest (whose digest Docker cannot pull by) or convert the manifest."""

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def is_digest(text: str) -> bool:
    """Whether ``text`` is ``sha256:<64 lower-case hex>`` (the only digest we record)."""
    return bool(_DIGEST.match(text))


def digest_of(body: bytes) -> str:
    """The content digest of a manifest as the registry stores it (sha256 of its bytes)."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def registry_base_urls(registry: str, http_registries: Iterable[str]) -> tuple[str, ...]:
    """The base URLs to try, in order: a listed registry over plain HTTP only; a loopback
    one over HTTPS, then plain HTTP if it does not speak TLS (Docker's rule for loopback
    registries, so pushes and resolution agree); any other over HTTPS only."""
    if registry in set(http_registries):
        return (f"http://{registry}",)
    if is_loopback(registry):
        return (f"https://{registry}", f"http://{registry}")
    return (f"https://{registry}",)


def manifest_url(base: str, ref: ImageRef) -> str:
    """``BASE/v2/REPOSITORY/manifests/{digest or tag}``; a digest wins over a tag."""
    target = ref.digest or ref.tag_or_latest
    return f"{base}/v2/{ref.repository}/manifests/{target}"


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: ``Bearer realm="...",service="..."`` or ``Basic``."""

    scheme: str
    """Lower-case: ``bearer`` or ``basic`` (anything else we cannot answer)."""
    params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))


_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` header, or None when it holds none.

    Distribution sends one: ``Bearer realm="https://auth/token",service="registry",
    scope="repository:app:pull"``; an htpasswd registry sends ``Basic realm="..."``.
    """
    text = header.strip()
    match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)", text)
    if not match:
        return None
    scheme, rest = match.group(1).lower(), text[match.end():]
    params: dict[str, str] = {}
    position = 0
    while position < len(rest):
        found = _PARAM.match(rest, position)
        if not found or found.end() == position:
            break
        value = found.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[found.group(1).lower()] = value
        position = found.end()
    return Challenge(scheme, params)


def token_url(challenge: Challenge, repository: str) -> str:
    """Where a Bearer challenge's token comes from: ``realm?service=...&scope=...`` asking
    for pull access to ``repository`` (the scope the registry names, if it names one)."""
    realm = challenge.params.get("realm", "")
    if not realm.startswith(("http://", "https://")):
        raise ValueError(f"the Bearer challenge names no usable realm ({realm!r})")
    query = {"scope": challenge.params.get("scope") or f"repository:{repository}:pull"}
    if challenge.params.get("service"):
        query["service"] = challenge.params["service"]
    separator = "&" if "?" in realm else "?"
    return realm + separator + urllib.parse.urlencode(sorted(query.items()))


def registry_error_text(body: bytes, status: int, reason: str) -> str:
    """The registry's own words for an error: the ``errors[].message`` (and ``code``) of
    its JSON body, else the first line of the body, else the HTTP status."""
    try:
        document = json.loads(body.decode("utf-8", "replace") or "null")
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("errors"), list):
        parts = []
        for error in document["errors"]:
            if isinstance(error, Mapping):
                code, message = str(error.get("code", "")), str(error.get("message", ""))
                parts.append(f"{code}: {message}" if code and message else code or message)
        if any(parts):
            return "; ".join(p for p in parts if p)
    first = body.decode("utf-8", "replace").strip().splitlines()
    if first and first[0].strip():
        return first[0].strip()[:200]
    return f"HTTP {status} {reason}".strip()


def single_digest(headers: Mapping[str, str] | None, body: bytes | None) -> str | None:
    """The manifest's digest: the ``Docker-Content-Digest`` header when it is a sha256
    digest, else the sha256 of the body when there is one, else None."""
    header = (headers or {}).get("docker-content-digest", "")
    if is_digest(header):
        return header
    if body:
        return digest_of(body)
    return None
