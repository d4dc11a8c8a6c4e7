"""UnitSpec and HealthCheck validation and round trips."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument, InvalidVersion
from common.input_bounds import CONTROL_PLANE_PORTS
from common.network_modes import NetworkMode
from common.resources import Resources
from common.unit_spec import (
    REDACTED,
    HealthCheck,
    StateMode,
    UnitSpec,
    canonical_json,
    redacted_secrets,
    sha256_of,
)

GOOD = {
    "apartment": "shop",
    "unit": "web",
    "version": "1.2.3",
    "image": "sha256:" + "ab" * 32,
    "port": 8080,
    "command": ["python3", "app.py"],
    "env": {"MODE": "prod"},
    "health_check": {"path": "/health", "interval_s": 2, "timeout_s": 1, "retries": 2},
    "resources": {"cpu": "250m", "memory": "128Mi"},
    "dependencies": ["db@^1"],
}


def test_from_dict_parses_human_forms_and_round_trips() -> None:
    spec = UnitSpec.from_dict(GOOD)
    assert spec.name == "shop/web"
    assert spec.resources == Resources(cpu=0.25, memory=128 << 20)
    assert spec.health_check == HealthCheck("/health", interval_s=2, timeout_s=1, retries=2)
    again = UnitSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.checksum() == spec.checksum()


@pytest.mark.parametrize(
    ("patch", "match", "error"),
    [
        ({"port": -1}, "port must be 0-65535", InvalidArgument),
        ({"service_port": 70000}, "service_port must be 0-65535", InvalidArgument),
        ({"state_mode": "copy"}, "state_mode must be one of", InvalidArgument),
        ({"idle_timeout_s": -1}, "idle_timeout_s", InvalidArgument),
        ({"warmup_s": float("nan")}, "warmup_s", InvalidArgument),
        ({"healthy_threshold": 0}, "healthy_threshold", InvalidArgument),
        ({"port": "80"}, "port", InvalidArgument),
        ({"version": "v1.2.3"}, "leading 'v'", InvalidVersion),
        ({"unit": "Web"}, "unit name", InvalidArgument),
        ({"unit": "shop/web"}, "bare name", InvalidArgument),
        ({"image": " "}, "image", InvalidArgument),
        ({"env": {"1BAD": "x"}}, "env", InvalidArgument),
        ({"env": {"A": 1}}, "env", InvalidArgument),
        ({"env": ["A=1"]}, "env", InvalidArgument),
        ({"command": "python3 app.py"}, "command", InvalidArgument),
        ({"dependencies": ["db"]}, "name@range", InvalidArgument),
        ({"resources": {"memory": "128m"}}, "memory", InvalidArgument),
        ({"health_check": {"path": "health"}}, "start with '/'", InvalidArgument),
        ({"health_check": {"interval_s": 0}}, "interval_s", InvalidArgument),
        ({"health_check": {"retries": 0}}, "retries", InvalidArgument),
        ({"health_check": {"probe": "x"}}, "unknown health_check field", InvalidArgument),
        ({"health_check": {"command": "x"}}, "health_check.command", InvalidArgument),
        ({"health_check": "x"}, "must be objects", InvalidArgument),
        ({"replicas": 3}, "unknown unit spec field", InvalidArgument),
        ({"apartment": None}, "apartment must be a string", InvalidArgument),
    ],
)
def test_bad_specs_say_what_to_fix(patch: dict[str, object], match: str, error: type) -> None:
    with pytest.raises(error, match=match):
        UnitSpec.from_dict(GOOD | patch)


def test_one_set_of_health_defaults() -> None:
    assert HealthCheck() == HealthCheck("/healthz", (), 10.0, 1.0, 3)
    assert HealthCheck.from_dict({}) == HealthCheck()


def test_command_health_check_needs_no_path() -> None:
    check = HealthCheck(path="", command=("true",))
    assert HealthCheck.from_dict(check.to_dict()) == check


def test_canonical_json_is_sorted_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    assert sha256_of({"a": 1}) == sha256_of({"a": 1})
    assert sha256_of({"a": 1}) == (
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    )


def _text(forbid: str = "\0", min_size: int = 0) -> st.SearchStrategy[str]:
    # no lone surrogates: they are not UTF-8 text (refused, tests/unit/test_input_bounds.py)
    return st.text(st.characters(blacklist_characters=forbid, blacklist_categories=["Cs"]),
                   min_size=min_size)


_PORTS = st.integers(0, 65535).filter(lambda p: p not in CONTROL_PLANE_PORTS)
RUNNING_FIELDS = {
    "image": _text("\0\r\n\t ", min_size=1).filter(str.strip),  # "\x0c" alone is blank
    "port": _PORTS,
    "command": st.lists(_text(), max_size=3).map(tuple),
    "env": st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}", fullmatch=True),
                           _text("\0\r\n"), max_size=3),
    "health_check": st.builds(
        HealthCheck, path=st.sampled_from(["/health", "/healthz", "/ready"]),
        command=st.lists(_text(min_size=1), max_size=2).map(tuple),
        interval_s=st.floats(0.1, 60), timeout_s=st.floats(0.1, 60),
        retries=st.integers(1, 9)),
    "resources": st.builds(Resources, cpu=st.floats(0.01, 8),
                           memory=st.integers(8 << 20, 1 << 34)),
    "dependencies": st.lists(st.sampled_from(["db@^1", "cache@~2.1", "other/api@>=1.0.0"]),
                             max_size=2, unique=True).map(tuple),
    "service_port": _PORTS,
    "state_mode": st.sampled_from(list(StateMode)),
    "idle_timeout_s": st.floats(0, 86400),
    "warmup_s": st.floats(0, 600),
    "healthy_threshold": st.integers(1, 10),
    "image_digest": st.text("0123456789abcdef", min_size=64, max_size=64).map(
        lambda h: f"sha256:{h}"),
    "network_mode": st.sampled_from(list(NetworkMode)),
    "run_as_root": st.booleans(),
}
"""Every field of a UnitSpec that changes what runs, with the values it may take."""


def test_the_running_fields_are_all_the_fields_but_the_names() -> None:
    # secret_env: its names change what runs, its values do not count (tests below)
    names = set(UnitSpec.__dataclass_fields__) - {"apartment", "unit", "version", "secret_env"}
    assert names == set(RUNNING_FIELDS)


@given(st.data())
def test_changing_any_running_field_changes_the_checksum(data: st.DataObject) -> None:
    base = UnitSpec.from_dict(GOOD)
    name = data.draw(st.sampled_from(sorted(RUNNING_FIELDS)))
    value = data.draw(RUNNING_FIELDS[name].filter(lambda v: v != getattr(base, name)))
    changed = replace(base, **{name: value})  # type: ignore[arg-type]  # drawn per field
    assert changed != base
    assert changed.checksum() != base.checksum()
    again = UnitSpec.from_dict(json.loads(json.dumps(changed.to_dict())))
    assert again == changed and again.checksum() == changed.checksum()


@pytest.mark.parametrize(
    "patch",
    [{"service_port": 8081}, {"state_mode": "snapshot"}, {"idle_timeout_s": 600},
     {"warmup_s": 3}, {"healthy_threshold": 2}, {"port": 0},
     {"health_check": {"command": ["check"]}}, {"run_as_root": True}],
)
def test_versions_that_differ_only_in_how_they_run_differ_in_checksum(
    patch: dict[str, object],
) -> None:
    assert UnitSpec.from_dict(GOOD | patch).checksum() != UnitSpec.from_dict(GOOD).checksum()


def test_a_spec_stored_before_the_run_fields_existed_keeps_its_checksum() -> None:
    """Fields at the value versions ran with before the spec held them are left out of the
    content, so the checksum recorded then (pinned here) still verifies."""
    assert UnitSpec.from_dict(GOOD).checksum() == (
        "567f8bd3c9ad62862c2d0383cfd32247ea2d18bb1ee37bcb86641349695a6c2a"
    )


DIGEST = "sha256:" + "ab" * 32


def test_run_as_root_is_in_the_content_only_when_asked() -> None:
    spec = UnitSpec.from_dict(GOOD)
    assert spec.run_as_root is False and "run_as_root" not in spec.content()
    root = UnitSpec.from_dict(GOOD | {"run_as_root": True})
    assert root.content()["run_as_root"] is True and root.to_dict()["run_as_root"] is True
    with pytest.raises(InvalidArgument, match="run_as_root must be true or false"):
        UnitSpec.from_dict(GOOD | {"run_as_root": "yes"})


def test_a_spec_without_a_digest_keeps_the_checksum_it_had_before_digests() -> None:
    spec = UnitSpec.from_dict(GOOD)
    assert "image_digest" not in spec.content()
    pinned = replace(spec, image_digest=DIGEST)
    assert pinned.content()["image_digest"] == DIGEST
    assert pinned.checksum() != spec.checksum()


def test_run_image_pins_the_digest_publishing_resolved() -> None:
    spec = replace(UnitSpec.from_dict(GOOD), image="127.0.0.1:5000/team/app:1.0.0")
    assert spec.run_image == "127.0.0.1:5000/team/app:1.0.0"  # not resolved (yet)
    pinned = replace(spec, image_digest=DIGEST)
    assert pinned.run_image == f"127.0.0.1:5000/team/app@{DIGEST}"
    again = replace(spec, image=f"127.0.0.1:5000/team/app:1.0.0@{DIGEST}", image_digest=DIGEST)
    assert again.run_image == f"127.0.0.1:5000/team/app@{DIGEST}"
    local = replace(UnitSpec.from_dict(GOOD), image="landlord/demo-app:1.0.0")
    assert local.run_image == "landlord/demo-app:1.0.0"


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 32, "SHA256:" + "a" * 64])
def test_a_malformed_digest_is_refused(digest: str) -> None:
    with pytest.raises(InvalidArgument, match="image_digest"):
        replace(UnitSpec.from_dict(GOOD), image_digest=digest)


_SECRET_NAMES = st.from_regex(r"S_[A-Z0-9_]{0,5}", fullmatch=True)
_SECRETS = st.dictionaries(_SECRET_NAMES, _text("\0\r\n"), min_size=1, max_size=3)


@given(_SECRETS, st.data())
def test_the_checksum_covers_secret_names_not_values(secrets: dict[str, str],
                                                      data: st.DataObject) -> None:
    base = UnitSpec.from_dict(GOOD)
    with_secrets = replace(base, secret_env=secrets)
    assert with_secrets.checksum() != base.checksum()
    other_values = {k: data.draw(_text("\0\r\n"), label=k) for k in secrets}
    assert replace(base, secret_env=other_values).checksum() == with_secrets.checksum()
    renamed = {f"{k}X": v for k, v in secrets.items()}
    assert replace(base, secret_env=renamed).checksum() != with_secrets.checksum()
    stored = json.loads(json.dumps(with_secrets.to_dict()))
    assert UnitSpec.from_dict(stored) == with_secrets  # the stored form keeps the values
    plain = canonical_json(base.content())  # a value may happen to be in it (e.g. a size)
    assert all(v not in canonical_json(with_secrets.content()) for v in secrets.values()
               if len(v) > 8 and v not in plain)


def test_redacted_secrets_keep_the_names_only() -> None:
    assert redacted_secrets({"TOKEN": "hunter2", "KEY": "k"}) == {"TOKEN": REDACTED,
                                                                  "KEY": REDACTED}


@pytest.mark.parametrize("secret", [
    {"MODE": "x"},  # the name of a plain variable in GOOD
    {"S": "a\nb"}, {"S": "a\0b"}, {"S": "x" * (32 * 1024 + 1)}, {"1S": "x"},
])
def test_bad_secret_env_is_refused_without_quoting_the_value(secret: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as err:
        UnitSpec.from_dict(GOOD | {"secret_env": secret})
    for value in secret.values():
        assert value not in str(err.value) or value == "x"


def test_a_spec_printed_in_a_log_or_error_shows_no_secret() -> None:
    spec = UnitSpec.from_dict(GOOD | {"secret_env": {"TOKEN": "hunter2-value"}})
    assert "hunter2" not in repr(spec) and "hunter2" not in str(spec)


def test_a_spec_without_secrets_is_stored_as_before() -> None:
    """A release before secrets refuses unknown fields: only a spec with secrets has one."""
    assert "secret_env" not in UnitSpec.from_dict(GOOD).to_dict()
