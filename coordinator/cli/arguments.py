"""Parsers for the CLI's positional arguments and repeated flags.

Every parser is pure and raises ``InvalidArgument`` naming the flag and the accepted
form, so the error boundary can print one line and exit with the usage code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from common import dependencies, semantic_versions
from common.errors import InvalidArgument, LandlordError

__all__ = [
    "UnitRef",
    "parse_dependency",
    "parse_key_values",
    "parse_rate",
    "parse_steps",
    "parse_unit_ref",
    "parse_unit_version",
    "parse_version",
]

NAME_PATTERN = dependencies.NAME_PATTERN
NAME_RULE = dependencies.NAME_RULE


@dataclass(frozen=True)
class UnitRef:
    """A unit named as ``APARTMENT/UNIT``."""

    apartment: str
    unit: str

    def __str__(self) -> str:
        return f"{self.apartment}/{self.unit}"


def parse_unit_ref(text: str, field_name: str = "unit") -> UnitRef:
    """``shop/cart`` -> UnitRef("shop", "cart")."""
    apartment, slash, unit = text.strip().partition("/")
    if not slash or not NAME_PATTERN.match(apartment) or not NAME_PATTERN.match(unit):
        raise InvalidArgument(
            f"{field_name}: {text!r} is not APARTMENT/UNIT (each part {NAME_RULE})",
            field=field_name,
            value=text,
        )
    return UnitRef(apartment, unit)


def parse_unit_version(text: str, field_name: str = "unit") -> tuple[UnitRef, str]:
    """``shop/cart@1.2.0`` -> (UnitRef("shop", "cart"), "1.2.0")."""
    name, at, version = text.strip().partition("@")
    if not at:
        raise InvalidArgument(
            f"{field_name}: {text!r} is not APARTMENT/UNIT@VERSION", field=field_name, value=text
        )
    return parse_unit_ref(name, field_name), parse_version(version, field_name)


def parse_version(text: str, field_name: str = "version") -> str:
    """A strict semver 2.0 version (``1.2.0``, ``2.0.0-rc.1``), with the server's rules."""
    try:
        semantic_versions.parse_version(text)
    except LandlordError as err:
        raise _prefixed(err, field_name) from None
    return text


def parse_dependency(text: str, apartment: str, field_name: str = "--dep") -> str:
    """``NAME@RANGE`` (``db@^1.2.0``, ``shop/db@>=1 <2``) checked, returned without padding."""
    try:
        dependencies.parse_dependency(text, apartment)
    except LandlordError as err:
        raise _prefixed(err, field_name) from None
    name, _, range_text = text.partition("@")
    return f"{name.strip()}@{range_text.strip()}"


def _prefixed(err: LandlordError, field_name: str) -> LandlordError:
    return type(err)(f"{field_name}: {err.message}", **err.context)


def parse_key_values(items: Iterable[str], field_name: str = "--env") -> dict[str, str]:
    """``["A=1", "B=x=y"]`` -> ``{"A": "1", "B": "x=y"}``; a repeated key is refused."""
    result: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or any(ch.isspace() for ch in key):
            raise InvalidArgument(
                f"{field_name}: {item!r} is not KEY=VALUE", field=field_name, value=item
            )
        if key in result:
            raise InvalidArgument(
                f"{field_name}: {key!r} is given twice", field=field_name, value=item
            )
        result[key] = value
    return result


def parse_steps(text: str, field_name: str = "--steps") -> list[int]:
    """``"5,25,50,100"`` -> [5, 25, 50, 100]: increasing percentages that end at 100."""
    parts = [part.strip().removesuffix("%") for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise InvalidArgument(
            f"{field_name}: {text!r} is not a comma-separated list of percentages "
            "such as 5,25,50,100",
            field=field_name,
            value=text,
        )
    steps = [int(part) for part in parts]
    if any(not 0 < step <= 100 for step in steps):
        raise InvalidArgument(
            f"{field_name}: every step must be between 1 and 100, got {text!r}",
            field=field_name,
            value=text,
        )
    if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        raise InvalidArgument(
            f"{field_name}: steps must increase, got {text!r}", field=field_name, value=text
        )
    if steps[-1] != 100:
        raise InvalidArgument(
            f"{field_name}: the last step must be 100, got {text!r}", field=field_name, value=text
        )
    return steps


def parse_rate(text: str, field_name: str = "--max-error-rate") -> float:
    """A fraction from ``"0.01"`` or ``"1%"``, between 0 and 1."""
    value = text.strip()
    try:
        rate = float(value.removesuffix("%")) / (100.0 if value.endswith("%") else 1.0)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise InvalidArgument(
            f"{field_name}: {text!r} is not a rate between 0 and 1 (write 0.01 or 1%)",
            field=field_name,
            value=text,
        )
    return rate
