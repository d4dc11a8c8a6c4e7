"""The landlord:// identity URI: round trip, canonical form, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.identity import (
    IDENTITY_NAME_PATTERN,
    SCOPABLE,
    Identity,
    Role,
    identity_from_uris,
    parse_identity_uri,
)

names = st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}\Z")
apartments = st.from_regex(r"\A[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?\Z")


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    role = draw(st.sampled_from(list(Role)))
    scope = None
    if role in SCOPABLE and draw(st.booleans()):
        scope = frozenset(draw(st.lists(apartments, min_size=1, max_size=4)))
    return Identity(role, draw(names), scope)


@given(identities())
def test_uri_round_trip(identity: Identity) -> None:
    assert parse_identity_uri(identity.uri) == identity
    assert parse_identity_uri(identity.uri).uri == identity.uri


@given(identities())
def test_one_identity_among_other_uris(identity: Identity) -> None:
    uris = ["spiffe://example.org/x", identity.uri, "https://example.org"]
    assert identity_from_uris(uris) == identity


def test_examples() -> None:
    assert parse_identity_uri("landlord://host/h1") == Identity(Role.HOST, "h1")
    scoped = parse_identity_uri("landlord://admin/alice?apartments=shop,blog")
    assert scoped.apartments == frozenset({"shop", "blog"})
    assert scoped.uri == "landlord://admin/alice?apartments=blog,shop"
    assert str(scoped) == "admin/alice (apartments blog,shop)"
    assert scoped.reaches("shop") and not scoped.reaches("other")
    assert Identity(Role.VIEWER, "bob").reaches("anything")


@pytest.mark.parametrize(("uri", "fragment"), [
    ("https://host/h1", "does not start with landlord://"),
    ("landlord://host", "is not landlord://<role>/<name>"),
    ("landlord://root/x", "known roles"),
    ("landlord://host/", "identity name"),
    ("landlord://host/a/b", "identity name"),
    ("landlord://host/h1?apartments=a", "cannot be scoped"),
    ("landlord://coordinator/c1?apartments=a", "cannot be scoped"),
    ("landlord://admin/a?apartments=", "at least one apartment"),
    ("landlord://admin/a?apartments=a,,b", "apartment ''"),
    ("landlord://admin/a?apartments=Shop", "apartment 'Shop'"),
    ("landlord://admin/a?tenants=a", "the only query"),
    ("landlord://admin/a?apartments", "the only query"),
])
def test_refused(uri: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment.replace("?", r"\?")):
        parse_identity_uri(uri)


def test_no_identity_and_two_identities() -> None:
    assert identity_from_uris(["spiffe://x/y"]) is None
    assert identity_from_uris([]) is None
    with pytest.raises(InvalidArgument, match="more than one"):
        identity_from_uris(["landlord://host/a", "landlord://admin/b"])
    # the same URI twice is one identity
    assert identity_from_uris(["landlord://host/a"] * 2) == Identity(Role.HOST, "a")


@given(st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True))
def test_a_name_with_a_trailing_newline_never_passes(name: str) -> None:
    assert IDENTITY_NAME_PATTERN.fullmatch(name) and IDENTITY_NAME_PATTERN.match(name)
    assert not IDENTITY_NAME_PATTERN.match(name + "\n")  # "$" would match before it
    assert not IDENTITY_NAME_PATTERN.fullmatch(name + "\n")
