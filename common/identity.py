"""Who a caller is: the identity a Landlord certificate carries in its SAN URI.

One URI SAN of the form ``landlord://<role>/<name>[?apartments=<a>,<b>]`` names the holder
(docs/security.md): ``landlord://host/<host id>``, ``landlord://coordinator/<id>``,
``landlord://admin/<name>``, ``landlord://viewer/<name>``. Only admin and viewer identities
may be scoped to apartments; without a scope they reach every apartment. Other URI SANs
(an operator's own scheme, SPIFFE) are ignored; two ``landlord://`` URIs in one certificate
are refused as ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from common.dependencies import NAME_PATTERN, NAME_RULE
from common.errors import InvalidArgument

__all__ = [
    "IDENTITY_NAME_PATTERN",
    "IDENTITY_NAME_RULE",
    "SCHEME",
    "Identity",
    "Role",
    "identity_from_uris",
    "parse_identity_uri",
]

SCHEME = "landlord://"
IDENTITY_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")
"""A host id, coordinator id, building or person's name (the fleet checks host ids and
buildings with it too, coordinator/fleet/agent_sessions.py)."""
IDENTITY_NAME_RULE = "1-63 letters, digits, '_', '.' or '-', starting with a letter or digit"
_SCOPE_KEY = "apartments"


class Role(StrEnum):
    """What a certificate's holder is; authorization decides from this and the scope."""

    COORDINATOR = "coordinator"
    HOST = "host"
    ADMIN = "admin"
    VIEWER = "viewer"


SCOPABLE = frozenset({Role.ADMIN, Role.VIEWER})


@dataclass(frozen=True)
class Identity:
    """A caller: its role, its name, and for people optionally the apartments it may reach."""

    role: Role
    name: str
    apartments: frozenset[str] | None = None
    """None: every apartment. A set: only these (admin and viewer only)."""

    def __post_init__(self) -> None:
        if not IDENTITY_NAME_PATTERN.fullmatch(self.name):
            raise InvalidArgument(
                f"identity name {self.name!r} is invalid: {IDENTITY_NAME_RULE}", name=self.name)
        if self.apartments is None:
            return
        if self.role not in SCOPABLE:
            raise InvalidArgument(
                f"a {self.role} identity cannot be scoped to apartments; only admin and viewer",
                role=str(self.role))
        if not self.apartments:
            raise InvalidArgument("an apartment scope names at least one apartment",
                                  name=self.name)
        for apartment in self.apartments:
            if not NAME_PATTERN.fullmatch(apartment):
                raise InvalidArgument(
                    f"apartment {apartment!r} in the scope is invalid: {NAME_RULE}",
                    apartment=apartment)

    @property
    def uri(self) -> str:
        """The SAN URI, canonical: apartments sorted."""
        base = f"{SCHEME}{self.role}/{self.name}"
        if self.apartments is None:
            return base
        return f"{base}?{_SCOPE_KEY}={','.join(sorted(self.apartments))}"

    @property
    def scoped(self) -> bool:
        return self.apartments is not None

    def reaches(self, apartment: str) -> bool:
        """True when this identity may see or change units of ``apartment``."""
        return self.apartments is None or apartment in self.apartments

    def __str__(self) -> str:
        """``admin/alice`` or ``viewer/bob (apartments a,b)``, for messages and logs."""
        text = f"{self.role}/{self.name}"
        if self.apartments is not None:
            text += f" (apartments {','.join(sorted(self.apartments))})"
        return text


def parse_identity_uri(uri: str) -> Identity:
    """The Identity a ``landlord://`` URI names; InvalidArgument says what is wrong."""
    if not uri.startswith(SCHEME):
        raise InvalidArgument(f"identity URI {uri!r} does not start with {SCHEME}", uri=uri)
    rest = uri[len(SCHEME):]
    path, _, query = rest.partition("?")
    role_text, slash, name = path.partition("/")
    if not slash:
        raise InvalidArgument(f"identity URI {uri!r} is not {SCHEME}<role>/<name>", uri=uri)
    try:
        role = Role(role_text)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidArgument(
            f"identity URI {uri!r} names role {role_text!r}; known roles: {roles}", uri=uri
        ) from None
    apartments: frozenset[str] | None = None
    if "?" in rest:
        key, equals, value = query.partition("=")
        if key != _SCOPE_KEY or not equals:
            raise InvalidArgument(
                f"identity URI {uri!r}: the only query is {_SCOPE_KEY}=<a>,<b>", uri=uri)
        apartments = frozenset(value.split(",")) if value else frozenset()
    return Identity(role, name, apartments)


def identity_from_uris(uris: Iterable[str]) -> Identity | None:
    """The one landlord identity among a certificate's URI SANs; None when there is none."""
    ours = sorted({u for u in uris if u.startswith(SCHEME)})
    if len(ours) > 1:
        raise InvalidArgument(
            f"the certificate names more than one Landlord identity: {', '.join(ours)}",
            uris=ours)
    return parse_identity_uri(ours[0]) if ours else None
