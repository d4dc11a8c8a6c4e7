"""Resource forms, capacity accounting and shortfall messages."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import Conflict, InsufficientResources, InvalidArgument
from common.resources import (
    _BITS,
    _BYTES,
    _CPU,
    HostLedger,
    Resources,
    format_bandwidth,
    format_bytes,
    format_cpu,
    parse_bandwidth,
    parse_bytes,
    parse_cpu,
)

Mi, Gi = 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("0.5", 0.5),
        ("2", 2.0),
        ("500m", 0.5),
        ("1500m", 1.5),
        (" 250m ", 0.25),
        (".5", 0.5),
        (1, 1.0),
        (0.25, 0.25),
        ("0", 0.0),
    ],
)
def test_cpu_forms(text: str | float, cores: float) -> None:
    assert parse_cpu(text) == cores


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256Mi", 256 * Mi),
        ("1G", 10**9),
        ("1Gi", Gi),
        ("512MiB", 512 * Mi),
        ("100M", 10**8),
        ("64k", 64_000),
        ("64Ki", 65_536),
        ("1.5Gi", 3 * Gi // 2),
        ("2T", 2 * 10**12),
        ("1048576", Mi),
        (4096, 4096),
        ("10GB", 10 * 10**9),
    ],
)
def test_byte_forms(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("10Mbit", 10**7),
        ("10mbit", 10**7),
        ("1gbit", 10**9),
        ("500kbit", 500_000),
        ("1Kibit", 1024),
        ("100bit", 100),
        ("1000000", 10**6),
        (2_000, 2_000),
        ("1.5Mbit", 1_500_000),
    ],
)
def test_bandwidth_forms(text: str | int, bits: int) -> None:
    assert parse_bandwidth(text) == bits


@pytest.mark.parametrize(
    ("parser", "bad", "field", "hint"),
    [
        (parse_cpu, "half", "cpu", "millicores"),
        (parse_cpu, "-1", "cpu", "500m"),
        (parse_cpu, -0.5, "cpu", "cores"),
        (parse_cpu, "1.5 cores", "cpu", "cores"),
        (parse_cpu, True, "cpu", "cores"),
        (parse_bytes, "256m", "memory", "ambiguous"),
        (parse_bytes, "lots", "memory", "256Mi"),
        (parse_bytes, "-5Mi", "memory", "256Mi"),
        (parse_bytes, -5, "memory", "256Mi"),
        (parse_bytes, "1Pi", "memory", "Ki"),
        (parse_bytes, None, "memory", "bytes"),
        (parse_bandwidth, "10Mbps", "network", "10Mbit"),
        (parse_bandwidth, "10M", "network", "mbit"),
        (parse_bandwidth, "fast", "network", "bits per second"),
        (parse_bandwidth, -1, "network", "bits"),
    ],
)
def test_bad_forms_name_the_field_and_the_accepted_forms(
    parser: object, bad: object, field: str, hint: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parser(bad)  # type: ignore[operator]
    assert str(caught.value).startswith(f"{field}: ")
    assert hint in str(caught.value)
    assert caught.value.context["field"] == field


@pytest.mark.parametrize(("pattern", "text"), [
    (_CPU, "500m"), (_CPU, "2"), (_BYTES, "256Mi"), (_BYTES, "1G"), (_BITS, "10Mbit"),
    (_BITS, "1gbit"),
])
def test_patterns_end_at_the_end_of_the_text(pattern: re.Pattern[str], text: str) -> None:
    """The patterns end in \\Z, like the name patterns: ``$`` also matches before a
    trailing newline. (The parsers strip surrounding whitespace first, on purpose: a value
    from a file may end in one; what they parse is the number.)"""
    assert pattern.match(text)
    assert not pattern.match(text + "\n")
    assert parse_cpu(" 500m\n") == 0.5 and parse_bytes("1Ki\n") == 1024


def test_storage_errors_name_storage() -> None:
    with pytest.raises(InvalidArgument, match=r"^storage: "):
        Resources.parse(storage="big")


def test_resources_parse_and_dict_round_trip() -> None:
    res = Resources.parse(cpu="500m", memory="256Mi", storage="1G", network="10Mbit")
    assert res == Resources(cpu=0.5, memory=256 * Mi, storage=10**9, network=10**7)
    assert Resources.from_dict(res.to_dict()) == res
    assert Resources.from_dict({"cpu": "2", "memory": "1Gi"}) == Resources(cpu=2, memory=Gi)


def test_resources_refuse_unknown_fields_and_negative_values() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown resource field.*gpu"):
        Resources.from_dict({"gpu": 1})
    with pytest.raises(InvalidArgument, match="memory must be >= 0"):
        Resources(memory=-1)
    with pytest.raises(InvalidArgument, match="memory must be a whole number"):
        Resources(memory=1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="cpu must be a number"):
        Resources(cpu="1")  # type: ignore[arg-type]


def test_human_formatting() -> None:
    assert format_cpu(0.5) == "0.5 cores" and format_cpu(1) == "1 core"
    assert format_bytes(256 * Mi) == "256Mi" and format_bytes(512) == "512 bytes"
    assert format_bytes(3 * Gi // 2) == "1.5Gi"
    assert format_bandwidth(10**7) == "10Mbit" and format_bandwidth(10) == "10 bit/s"


HOST = Resources(cpu=2.0, memory=4 * Gi, storage=20 * Gi, network=10**9)


def test_reserve_and_release_account_for_each_instance() -> None:
    ledger = HostLedger("127.0.0.2", HOST)
    one = Resources(cpu=0.5, memory=Gi)
    ledger = ledger.reserve("i-1", one).reserve("i-2", one)
    assert ledger.allocated == Resources(cpu=1.0, memory=2 * Gi)
    assert ledger.available == Resources(cpu=1.0, memory=2 * Gi, storage=20 * Gi, network=10**9)
    ledger = ledger.release("i-1")
    assert set(ledger.allocations) == {"i-2"}
    assert ledger.available.cpu == 1.5


def test_reserve_and_release_are_idempotent_by_instance() -> None:
    one = Resources(cpu=1.0, memory=Gi)
    ledger = HostLedger("h", HOST).reserve("i-1", one)
    assert ledger.reserve("i-1", one) is ledger
    assert ledger.release("i-9") is ledger
    assert ledger.release("i-1").release("i-1").allocated == Resources()
    with pytest.raises(Conflict, match="already holds"):
        ledger.reserve("i-1", Resources(cpu=2.0))


def test_ledger_is_immutable() -> None:
    ledger = HostLedger("h", HOST)
    ledger.reserve("i-1", Resources(cpu=1.0))
    assert ledger.allocations == {}
    with pytest.raises(TypeError):
        ledger.allocations["x"] = Resources()  # type: ignore[index]


def test_insufficient_resources_names_every_short_dimension() -> None:
    ledger = HostLedger("127.0.0.3", HOST).reserve("i-1", Resources(cpu=1.5, memory=3 * Gi))
    want = Resources(cpu=1.0, memory=2 * Gi, storage=Gi, network=2 * 10**9)
    with pytest.raises(InsufficientResources) as caught:
        ledger.reserve("i-2", want)
    text = str(caught.value)
    assert "host 127.0.0.3" in text
    assert "cpu requested 1 core, available 0.5 cores" in text
    assert "memory requested 2Gi, available 1Gi" in text
    assert "network requested 2Gbit, available 1Gbit" in text
    assert "storage" not in text
    shortfalls = caught.value.context["shortfalls"]
    assert isinstance(shortfalls, list)
    assert [s[0] for s in shortfalls] == ["cpu", "memory", "network"]
    assert caught.value.code == "RESOURCE_EXHAUSTED"


fractions = st.integers(min_value=1, max_value=2000).map(lambda m: m / 1000)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(fractions, st.integers(0, Gi)), max_size=20))
def test_ledger_never_overcommits(requests: list[tuple[float, int]]) -> None:
    ledger = HostLedger("h", Resources(cpu=4.0, memory=4 * Gi))
    for index, (cpu, memory) in enumerate(requests):
        want = Resources(cpu=cpu, memory=memory)
        fits = ledger.fits(want)
        try:
            ledger = ledger.reserve(f"i-{index}", want)
            assert fits
        except InsufficientResources:
            assert not fits
        assert ledger.allocated.cpu <= 4.0 + 1e-6
        assert ledger.allocated.memory <= 4 * Gi
    for name in list(ledger.allocations):
        ledger = ledger.release(name)
    assert ledger.available == ledger.capacity
