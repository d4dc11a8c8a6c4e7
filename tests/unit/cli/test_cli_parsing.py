"""Pure parsers of the CLI: durations, names, versions, ranges, lists, addresses."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument, InvalidVersion
from coordinator.cli.arguments import (
    UnitRef,
    parse_dependency,
    parse_key_values,
    parse_rate,
    parse_steps,
    parse_unit_ref,
    parse_unit_version,
    parse_version,
)
from coordinator.cli.client import (
    Decision,
    NextStep,
    decide_after_failure,
    parse_addresses,
)
from coordinator.cli.durations import (
    duration_to_proto,
    format_duration,
    parse_duration,
    seconds_from_proto,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("0", 0.0),
        (" 10S ", 10.0),
    ],
)
def test_parse_duration_accepts_human_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "5x", "-1s", "s", "1s2", "1 s", "ms", "1d", "nan"])
def test_parse_duration_refuses_other_forms_naming_the_flag(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_duration(text, "--monitor")
    message = str(caught.value)
    assert message.startswith("--monitor: ")
    assert "250ms, 30s, 5m" in message
    assert "\n" not in message


def test_parse_duration_says_a_unit_is_missing_for_a_bare_number() -> None:
    with pytest.raises(InvalidArgument, match="a unit is required"):
        parse_duration("30")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (30, "30s"), (90, "1m30s"), (3600, "1h"), (5430, "1h30m30s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=999))
def test_duration_proto_round_trip(whole: int, millis: int) -> None:
    seconds = whole + millis / 1000
    proto = duration_to_proto(seconds)
    assert 0 <= proto.nanos < 1_000_000_000
    assert seconds_from_proto(proto) == pytest.approx(seconds, abs=1e-6)


@given(st.integers(min_value=0, max_value=10**6))
def test_format_then_parse_gives_whole_seconds_back(whole: int) -> None:
    assert parse_duration(format_duration(whole)) == whole


@given(st.integers(min_value=1, max_value=999))
def test_format_then_parse_gives_milliseconds_back(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)


def test_unit_ref_and_unit_at_version() -> None:
    assert parse_unit_ref("shop/cart") == UnitRef("shop", "cart")
    assert str(parse_unit_ref(" shop/cart ")) == "shop/cart"
    assert parse_unit_version("shop/cart@1.2.0-rc.1") == (UnitRef("shop", "cart"), "1.2.0-rc.1")


@pytest.mark.parametrize("text", ["cart", "shop/", "/cart", "shop/cart/x", "Shop/cart", "a b/c"])
def test_unit_ref_refuses_malformed_names(text: str) -> None:
    with pytest.raises(InvalidArgument, match="is not APARTMENT/UNIT"):
        parse_unit_ref(text)


def test_unit_version_needs_the_version() -> None:
    with pytest.raises(InvalidArgument, match="APARTMENT/UNIT@VERSION"):
        parse_unit_version("shop/cart")
    with pytest.raises(InvalidVersion, match="not a semantic version"):
        parse_unit_version("shop/cart@1.2")


@pytest.mark.parametrize("text", ["1.2", "v1.2.3", "1.2.3.4", "01.2.3", "latest", ""])
def test_parse_version_refuses_non_semver_with_the_field_name(text: str) -> None:
    with pytest.raises(InvalidVersion) as caught:
        parse_version(text, "version")
    assert str(caught.value).startswith("version: ")


def test_parse_version_hints_at_a_leading_v() -> None:
    with pytest.raises(InvalidVersion, match="drop the leading 'v'"):
        parse_version("v1.2.3")


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("db@^1.2.0", "db@^1.2.0"),
        ("shared/cache@~2.1", "shared/cache@~2.1"),
        ("db @ >=1.0.0 <2.0.0", "db@>=1.0.0 <2.0.0"),
        ("db@*", "db@*"),
        ("db@1.x || ^3", "db@1.x || ^3"),
    ],
)
def test_parse_dependency_accepts_npm_ranges(text: str, normal: str) -> None:
    assert parse_dependency(text, "shop") == normal


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("db", "is not name@range"),
        ("db@", "has no version range"),
        ("db@^^1", "is not an npm range"),
        ("db@bogus", "is not an npm range"),
        ("Bad Name@^1", "is not valid"),
        ("a/b/c@^1", "is not valid"),
    ],
)
def test_parse_dependency_refuses_bad_specs(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment) as caught:
        parse_dependency(text, "shop")
    assert str(caught.value).startswith("--dep: ")


def test_parse_key_values() -> None:
    assert parse_key_values(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(InvalidArgument, match="is not KEY=VALUE"):
        parse_key_values(["A"])
    with pytest.raises(InvalidArgument, match="given twice"):
        parse_key_values(["A=1", "A=2"])


def test_parse_steps() -> None:
    assert parse_steps("5,25,50,100") == [5, 25, 50, 100]
    assert parse_steps("10%, 100%") == [10, 100]
    assert parse_steps("100") == [100]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("5,x,100", "comma-separated list"),
        ("0,100", "between 1 and 100"),
        ("5,150", "between 1 and 100"),
        ("50,25,100", "must increase"),
        ("5,25,50", "last step must be 100"),
        ("", "comma-separated list"),
    ],
)
def test_parse_steps_refuses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        parse_steps(text)


def test_parse_rate() -> None:
    assert parse_rate("0.01") == pytest.approx(0.01)
    assert parse_rate("1%") == pytest.approx(0.01)
    assert parse_rate("0") == 0.0
    for bad in ("2", "-0.1", "x", "nan", "150%"):
        with pytest.raises(InvalidArgument, match="between 0 and 1"):
            parse_rate(bad)


def test_parse_addresses() -> None:
    assert parse_addresses("127.0.0.1:7400") == ("127.0.0.1:7400",)
    assert parse_addresses("127.0.0.1, 127.0.0.2:7071,127.0.0.1:7400") == (
        "127.0.0.1:7400",
        "127.0.0.2:7071",
    )
    for bad in ("", " , ", "host:x", "host:0", "host:70000", ":7070"):
        with pytest.raises(InvalidArgument, match="--coordinator"):
            parse_addresses(bad)


def test_failover_decisions() -> None:
    leader = [("x-leader", "127.0.0.1:7071")]
    code = grpc.StatusCode
    assert decide_after_failure(code.UNAVAILABLE, (), "a:1", False) == Decision(NextStep.TRY_NEXT)
    assert decide_after_failure(code.FAILED_PRECONDITION, leader, "127.0.0.1:7400", False) == (
        Decision(NextStep.FOLLOW_LEADER, "127.0.0.1:7071")
    )
    # bytes values and any case of the key
    assert decide_after_failure(
        code.FAILED_PRECONDITION, [("X-Leader", b"127.0.0.1:7072")], "a:1", False
    ) == Decision(NextStep.FOLLOW_LEADER, "127.0.0.1:7072")
    # followed once already, no trailer, or the trailer names the address itself: fail
    assert decide_after_failure(code.FAILED_PRECONDITION, leader, "a:1", True).step is NextStep.FAIL
    assert decide_after_failure(code.FAILED_PRECONDITION, (), "a:1", False).step is NextStep.FAIL
    assert (
        decide_after_failure(code.FAILED_PRECONDITION, leader, "127.0.0.1:7071", False).step
        is NextStep.FAIL
    )
    # any other status is the answer, whatever the trailers say
    for other in (code.NOT_FOUND, code.INVALID_ARGUMENT, code.UNIMPLEMENTED, code.ABORTED):
        assert decide_after_failure(other, leader, "a:1", False).step is NextStep.FAIL
