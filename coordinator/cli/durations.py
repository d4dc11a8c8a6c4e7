"""Durations as people type them (``30s``, ``250ms``, ``5m``, ``1h30m``) and back.

The protobuf Duration conversions are ``common.proto_values``' (re-exported under the
names the CLI modules use).

A duration is one or more ``<number><unit>`` parts with units ``ms``, ``s``, ``m`` and
``h`` (``1m30s``, ``1.5s``). A bare number is refused, except ``0``, because ``30``
could mean seconds or milliseconds.
"""

from __future__ import annotations

import math
import re

from common.errors import InvalidArgument
from common.proto_values import duration_from_pb as seconds_from_proto
from common.proto_values import duration_to_pb as duration_to_proto

__all__ = ["duration_to_proto", "format_duration", "parse_duration", "seconds_from_proto"]

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_SCALE = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
FORMS = "a number with a unit: 250ms, 30s, 5m, 1h or 1m30s"


def parse_duration(text: str, field_name: str = "duration") -> float:
    """Seconds from ``"30s"``, ``"250ms"``, ``"5m"``, ``"1h30m"``; raises InvalidArgument."""
    value = text.strip().lower()
    if value == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _SCALE[match.group(2)]
        position = match.end()
    if not value or position != len(value) or not math.isfinite(total):
        hint = " (a unit is required)" if re.fullmatch(r"[\d.]+", value) else ""
        raise InvalidArgument(
            f"{field_name}: {text!r} is not a duration{hint}; write {FORMS}",
            field=field_name,
            value=text,
        )
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact-enough human form: ``250ms``, ``30s``, ``1m30s``, ``2h``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.4g}ms"
    if seconds < 60:
        return f"{seconds:.4g}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount)


