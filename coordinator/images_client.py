"""Resolve an image reference to its manifest digest through the registry's HTTP API.

``HEAD /v2/NAME/manifests/TAG`` with the manifest types in ``Accept`` answers the digest in
``Docker-Content-Digest`` (a registry that leaves it out gets a GET, and the body's sha256
is the digest). A reference already pinned by digest is checked to exist the same way.
Authentication follows the registry's 401 challenge: Bearer (a token from the realm, asked
with the Basic credentials of ``registry_auth_file`` if it has any) or Basic. The requests
are blocking (urllib), so ``resolve`` runs them in a thread, off the event loop.

Errors, each with the registry's own words: the tag or digest is not there -> NotFound;
credentials missing or refused -> FailedPrecondition; unreachable, timed out or a 5xx ->
Unavailable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import NoReturn

from common.errors import FailedPrecondition, NotFound, Unavailable
from common.image_refs import ImageRef, RegistryCredentials, load_registry_credentials
from coordinator.images import (
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    manifest_url,
    parse_challenge,
    registry_base_urls,
    registry_error_text,
    single_digest,
    token_url,
)

__all__ = ["RegistryClient"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0


class _NotTLS(Exception):
    """The registry answered the TLS handshake with something else (it speaks HTTP)."""


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes


class RegistryClient:
    """Resolves tags to digests; one per coordinator, built from its registry settings."""

    def __init__(self, *, credentials: Mapping[str, RegistryCredentials] | None = None,
                 ca_file: str = "", http: Iterable[str] = (),
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.credentials = dict(credentials or {})
        self.http = frozenset(http)
        self.timeout_s = timeout_s
        self._bases: dict[str, str] = {}
        # no proxy handler: registries are reached directly (a proxy from the environment
        # would see loopback registries' traffic and credentials)
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=ssl.create_default_context(
                cafile=ca_file or None)))

    @classmethod
    def from_settings(cls, *, auth_file: str, ca_file: str, http: Iterable[str],
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> RegistryClient:
        return cls(credentials=load_registry_credentials(auth_file), ca_file=ca_file,
                   http=http, timeout_s=timeout_s)

    async def resolve(self, ref: ImageRef) -> str:
        """The digest ``ref`` names now in its registry (``sha256:...``)."""
        return await asyncio.to_thread(self.resolve_blocking, ref)

    def resolve_blocking(self, ref: ImageRef) -> str:
        if not ref.in_registry:
            raise ValueError(f"{ref} names no registry")
        auth: Mapping[str, str] = {}
        url, answer = self._first_answer(ref)
        if answer.status == 401:
            auth = self._authorization(ref, answer)
            answer = self._request("HEAD", url, ref, auth)
        if not 200 <= answer.status < 300:
            # a HEAD error has no body: ask again with GET for the registry's own words
            again = self._request("GET", url, ref, auth)
            _raise_for(again if again.status == answer.status else answer, ref)
        _check_media(answer, ref, required=False)  # a HEAD may leave the type out
        digest = single_digest(answer.headers, None)
        if digest is None:  # no Docker-Content-Digest: hash what the registry serves
            answer = self._request("GET", url, ref, auth)
            if not 200 <= answer.status < 300:
                _raise_for(answer, ref)
            _check_media(answer, ref, required=True)
            digest = single_digest(answer.headers, answer.body)
            if digest is None:
                raise FailedPrecondition(f"registry {ref.registry} served an empty manifest "
                                         f"for {ref}", image=str(ref))
        if ref.digest and digest != ref.digest:
            raise FailedPrecondition(
                f"registry {ref.registry} serves {digest} for {ref}, not the pinned digest",
                image=str(ref))
        return digest

    # -- requests --------------------------------------------------------------------------

    def _first_answer(self, ref: ImageRef) -> tuple[str, _Answer]:
        """The manifest URL that answers (scheme chosen per ``registry_base_urls``,
        remembered per registry) and its anonymous HEAD answer."""
        known = self._bases.get(ref.registry)
        bases = (known,) if known else registry_base_urls(ref.registry, self.http)
        for position, base in enumerate(bases):
            url = manifest_url(base, ref)
            try:
                answer = self._request("HEAD", url, ref, {},
                                       plain_fallback=position < len(bases) - 1)
            except _NotTLS:
                continue
            self._bases[ref.registry] = base
            return url, answer
        raise AssertionError("the last base URL never falls back")

    def _request(self, method: str, url: str, ref: ImageRef, headers: Mapping[str, str],
                 plain_fallback: bool = False) -> _Answer:
        request = urllib.request.Request(url, method=method,
                                         headers={"Accept": MANIFEST_ACCEPT, **headers})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return _Answer(response.status, response.reason, _lower(response.headers),
                               response.read() if method != "HEAD" else b"")
        except urllib.error.HTTPError as exc:
            with exc:
                body = exc.read() if method != "HEAD" else b""
            return _Answer(exc.code, str(exc.reason), _lower(exc.headers), body)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise FailedPrecondition(
                    f"registry {ref.registry}: TLS certificate not trusted "
                    f"({reason.verify_message}); set registry_ca_file to the CA that signed it",
                    image=str(ref)) from None
            if plain_fallback and isinstance(reason, ssl.SSLError):
                raise _NotTLS from None
            raise Unavailable(f"registry {ref.registry} is unreachable ({reason}) while "
                              f"resolving {ref}", image=str(ref)) from None

    def _authorization(self, ref: ImageRef, first: _Answer) -> Mapping[str, str]:
        """The Authorization header that answers the registry's 401 challenge."""
        header = first.headers.get("www-authenticate", "")
        challenge = parse_challenge(header)
        creds = self.credentials.get(ref.registry)
        if challenge is None or challenge.scheme not in ("bearer", "basic"):
            raise FailedPrecondition(
                f"registry {ref.registry} asks for authentication this coordinator cannot "
                f"answer ({header or 'no challenge'!r})", image=str(ref))
        if challenge.scheme == "basic":
            if creds is None:
                raise FailedPrecondition(
                    f"registry {ref.registry} requires credentials and registry_auth_file has "
                    f"none for it (resolving {ref})", image=str(ref))
            return {"Authorization": f"Basic {_basic(creds)}"}
        try:
            url = token_url(challenge, ref.repository)
        except ValueError as exc:
            raise FailedPrecondition(f"registry {ref.registry}: {exc}", image=str(ref)) from None
        return {"Authorization": f"Bearer {self._token(url, ref, creds)}"}

    def _token(self, url: str, ref: ImageRef, creds: RegistryCredentials | None) -> str:
        headers = {"Authorization": f"Basic {_basic(creds)}"} if creds else {}
        answer = self._request("GET", url, ref, headers)
        if answer.status in (401, 403):
            raise FailedPrecondition(
                f"the token service of registry {ref.registry} refused "
                f"{'the credentials of registry_auth_file' if creds else 'anonymous access'}"
                f": {registry_error_text(answer.body, answer.status, answer.reason)}",
                image=str(ref))
        if answer.status >= 300:
            raise Unavailable(f"the token service of registry {ref.registry} failed: "
                              f"{registry_error_text(answer.body, answer.status, answer.reason)}",
                              image=str(ref))
        try:
            document = json.loads(answer.body)
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"the token service of registry {ref.registry} answered no token",
                              image=str(ref))
        return token



def _raise_for(answer: _Answer, ref: ImageRef) -> NoReturn:
    text = registry_error_text(answer.body, answer.status, answer.reason)
    what = f"digest {ref.digest}" if ref.digest else f"tag {ref.tag_or_latest!r}"
    if answer.status == 404:
        raise NotFound(f"image {ref}: registry {ref.registry} has no {what} of "
                       f"{ref.repository} ({text})", image=str(ref))
    if answer.status in (401, 403):
        raise FailedPrecondition(f"registry {ref.registry} refused access to {ref.repository} "
                                 f"({text}); check registry_auth_file", image=str(ref))
    if answer.status >= 500 or answer.status == 429:
        raise Unavailable(f"registry {ref.registry} failed resolving {ref}: {text}",
                          image=str(ref))
    raise FailedPrecondition(f"registry {ref.registry} answered {ref}: {text}", image=str(ref))


def _check_media(answer: _Answer, ref: ImageRef, *, required: bool) -> None:
    """Refuse a manifest Docker cannot run by digest (schema 1, or anything else)."""
    media = answer.headers.get("content-type", "").split(";")[0].strip()
    if (media or required) and media not in MANIFEST_TYPES:
        raise FailedPrecondition(
            f"registry {ref.registry} serves {ref} as {media or 'no media type'}, not one of "
            f"the accepted manifests ({', '.join(MANIFEST_TYPES)})", image=str(ref))


def _basic(creds: RegistryCredentials) -> str:
    return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def _lower(headers: Message) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
