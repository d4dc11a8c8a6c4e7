"""coordinator.images: the pure parts of resolving a tag to its digest."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.image_refs import parse_image_ref
from common.transport import is_loopback
from coordinator.images import (
    MANIFEST_ACCEPT,
    Challenge,
    digest_of,
    is_digest,
    manifest_url,
    parse_challenge,
    registry_base_urls,
    registry_error_text,
    single_digest,
    token_url,
)

DIGEST = "sha256:" + "0f" * 32


def test_accept_names_docker_and_oci_manifests_and_indexes() -> None:
    accepted = [m.strip() for m in MANIFEST_ACCEPT.split(",")]
    assert accepted == [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
    assert "v1+prettyjws" not in MANIFEST_ACCEPT  # never schema 1


@pytest.mark.parametrize(
    ("registry", "loopback"),
    [("127.0.0.1:5000", True), ("127.3.4.5", True), ("localhost:5000", True),
     ("[::1]:5000", True), ("registry.example:5000", False), ("192.0.2.7:5000", False),
     ("ghcr.io", False), ("[2001:db8::1]:5000", False)],
)
def test_loopback_registries_try_https_then_http_others_https_only(registry: str,
                                                                    loopback: bool) -> None:
    assert is_loopback(registry) is loopback
    expected = ((f"https://{registry}", f"http://{registry}") if loopback
                else (f"https://{registry}",))
    assert registry_base_urls(registry, ()) == expected


def test_listed_registries_speak_plain_http_only() -> None:
    assert registry_base_urls("192.0.2.7:5000", ["192.0.2.7:5000"]) == ("http://192.0.2.7:5000",)
    assert registry_base_urls("192.0.2.7:5001", ["192.0.2.7:5000"]) == ("https://192.0.2.7:5001",)
    assert registry_base_urls("127.0.0.1:5000", ["127.0.0.1:5000"]) == (
        "http://127.0.0.1:5000",)


def test_manifest_url_uses_the_digest_else_the_tag_else_latest() -> None:
    base = "http://127.0.0.1:5000"
    assert manifest_url(base, parse_image_ref("127.0.0.1:5000/team/app:1.0.0")) == (
        f"{base}/v2/team/app/manifests/1.0.0")
    assert manifest_url(base, parse_image_ref(f"127.0.0.1:5000/app:1@{DIGEST}")) == (
        f"{base}/v2/app/manifests/{DIGEST}")
    assert manifest_url(base, parse_image_ref("127.0.0.1:5000/app")) == (
        f"{base}/v2/app/manifests/latest")


def test_bearer_challenge_of_distribution() -> None:
    header = ('Bearer realm="https://auth.example/token",service="registry.example",'
              'scope="repository:team/app:pull"')
    challenge = parse_challenge(header)
    assert challenge == Challenge("bearer", {
        "realm": "https://auth.example/token", "service": "registry.example",
        "scope": "repository:team/app:pull"})
    assert token_url(challenge, "team/app") == (
        "https://auth.example/token?scope=repository%3Ateam%2Fapp%3Apull"
        "&service=registry.example")


def test_basic_challenge_and_odd_spacing_and_escapes() -> None:
    assert parse_challenge('Basic realm="basic-realm"') == Challenge("basic",
                                                                     {"realm": "basic-realm"})
    assert parse_challenge("basic") == Challenge("basic", {})
    spaced = parse_challenge('BEARER  realm = "http://a/t" , service=reg, error="a \\"b\\""')
    assert spaced == Challenge("bearer", {"realm": "http://a/t", "service": "reg",
                                          "error": 'a "b"'})
    assert parse_challenge("") is None
    assert parse_challenge("  ,") is None


def test_token_url_asks_pull_scope_when_the_registry_names_none() -> None:
    challenge = Challenge("bearer", {"realm": "http://127.0.0.1:9/token?x=1"})
    assert token_url(challenge, "app") == "http://127.0.0.1:9/token?x=1&scope=repository%3Aapp%3Apull"
    with pytest.raises(ValueError, match="realm"):
        token_url(Challenge("bearer", {"realm": "/relative"}), "app")


@given(st.text(max_size=300))
def test_parse_challenge_never_raises(header: str) -> None:
    challenge = parse_challenge(header)
    assert challenge is None or challenge.scheme == challenge.scheme.lower()


@given(st.binary(max_size=500))
def test_digest_of_is_the_sha256_of_the_bytes(body: bytes) -> None:
    digest = digest_of(body)
    assert is_digest(digest) and digest == "sha256:" + hashlib.sha256(body).hexdigest()


def test_is_digest() -> None:
    assert is_digest(DIGEST)
    for text in ("", "sha256:abc", DIGEST.upper(), "sha512:" + "0" * 128, DIGEST + "0",
                 DIGEST + "\n"):  # "$" would let a trailing newline pass
        assert not is_digest(text)


def test_single_digest_prefers_the_header_then_the_body() -> None:
    body = b'{"schemaVersion":2}'
    assert single_digest({"docker-content-digest": DIGEST}, body) == DIGEST
    assert single_digest({"docker-content-digest": "garbage"}, body) == digest_of(body)
    assert single_digest({}, body) == digest_of(body)
    assert single_digest({}, b"") is None
    assert single_digest(None, None) is None


def test_registry_error_text_reads_the_distribution_error_body() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}'
    assert registry_error_text(body, 404, "Not Found") == "MANIFEST_UNKNOWN: manifest unknown"
    assert registry_error_text(b"upstream down\nmore", 502, "Bad Gateway") == "upstream down"
    assert registry_error_text(b"", 503, "Service Unavailable") == "HTTP 503 Service Unavailable"
    assert registry_error_text(b'{"errors":[]}', 500, "") == '{"errors":[]}'
