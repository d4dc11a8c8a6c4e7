"""UnitSpec and HealthCheck validation and round trips."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidArgument, InvalidVersion
from common.resources import Resources
from common.unit_spec import HealthCheck, UnitSpec, canonical_json, sha256_of

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
        ({"port": 0}, "port must be 1-65535", InvalidArgument),
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
