"""Image references and registry credentials files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.image_refs import ImageRef, load_registry_credentials, parse_image_ref

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "expected"), [
    ("landlord/demo-app:1.0.0", ImageRef("", "landlord/demo-app", "1.0.0", "")),
    ("busybox", ImageRef("", "busybox", "", "")),
    ("127.0.0.1:5000/landlord/demo-app:1.0.0",
     ImageRef("127.0.0.1:5000", "landlord/demo-app", "1.0.0", "")),
    ("localhost/app", ImageRef("localhost", "app", "", "")),
    ("registry.example.org/team/app@" + DIGEST,
     ImageRef("registry.example.org", "team/app", "", DIGEST)),
    ("127.0.0.1:5000/app:2@" + DIGEST, ImageRef("127.0.0.1:5000", "app", "2", DIGEST)),
])
def test_parse(text: str, expected: ImageRef) -> None:
    assert parse_image_ref(text) == expected
    assert str(parse_image_ref(text)) == text


@pytest.mark.parametrize("text", [
    "", " ", "App:1", "app:", "app@sha256:12", "127.0.0.1:5000/", "a" * 600,
    "app:bad tag", "host.io:port/app",
])
def test_bad_references_say_what_is_wrong(text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_image_ref(text)
    assert "image" in str(err.value)


def test_pinned_drops_the_tag() -> None:
    ref = parse_image_ref("127.0.0.1:5000/landlord/demo-app:1.0.0")
    assert ref.pinned(DIGEST) == f"127.0.0.1:5000/landlord/demo-app@{DIGEST}"
    assert parse_image_ref(ref.pinned(DIGEST)).digest == DIGEST
    with pytest.raises(InvalidArgument):
        ref.pinned("sha256:xyz")


@given(st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True),
       st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True),
       st.sampled_from(["", "127.0.0.1:5000", "reg.example.org"]))
def test_round_trip(repository: str, tag: str, registry: str) -> None:
    text = f"{registry}/{repository}:{tag}" if registry else f"{repository}:{tag}"
    ref = parse_image_ref(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)
    assert parse_image_ref(str(ref)) == ref


def test_credentials_in_docker_config_shape(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    auth = base64.b64encode(b"robot:s3cret:with-colon").decode()
    path.write_text(json.dumps({"auths": {
        "127.0.0.1:5000": {"auth": auth},
        "https://reg.example.org/v2/": {"username": "u", "password": "p"},
    }}))
    creds = load_registry_credentials(path)
    assert creds["127.0.0.1:5000"].username == "robot"
    assert creds["127.0.0.1:5000"].password == "s3cret:with-colon"
    assert creds["reg.example.org"].password == "p"
    assert "s3cret" not in repr(creds["127.0.0.1:5000"])
    assert load_registry_credentials("") == {}


@pytest.mark.parametrize(("content", "says"), [
    ("{", "not JSON"),
    ("[]", "auths"),
    ('{"auths": {"h": {"auth": "***"}}}', "base64"),
    ('{"auths": {"h": {}}}', "neither"),
])
def test_bad_credentials_files(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(InvalidArgument) as err:
        load_registry_credentials(path)
    assert says in str(err.value) and str(path) in str(err.value)


def test_missing_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="No such file"):
        load_registry_credentials(tmp_path / "nope.json")
