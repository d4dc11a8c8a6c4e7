"""How results leave the CLI: JSON from protobuf, or rich tables and lines for people.

JSON uses the proto field names (snake_case), prints every field (defaults included) so
the shape never depends on the values, writes 64-bit integers as numbers and enums by
name. A single answer is one indented JSON document; a stream (events, a watched rollout)
is one compact JSON document per line.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from rich.console import Console, RenderableType
from rich.text import Text

from common.proto_values import timestamp_from_pb

__all__ = [
    "OutputFormat",
    "enum_label",
    "format_time",
    "print_json",
    "print_json_line",
    "print_rich",
    "to_json_dict",
]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def to_json_dict(message: Message) -> dict[str, Any]:
    """The stable JSON form of any API message."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def print_json(message: Message) -> None:
    sys.stdout.write(json.dumps(to_json_dict(message), indent=2, sort_keys=True) + "\n")


def print_json_line(message: Message) -> None:
    sys.stdout.write(json.dumps(to_json_dict(message), sort_keys=True) + "\n")
    sys.stdout.flush()


PIPE_WIDTH = 200
"""Columns of tables written to a pipe or file, where nothing tells the width."""


def console() -> Console:
    """A console on the current stdout (so test runners that swap stdout see the output)."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(
        file=sys.stdout, highlight=False, markup=False, width=PIPE_WIDTH if piped else None
    )


def print_rich(*renderables: RenderableType) -> None:
    out = console()
    for renderable in renderables:
        # plain strings hold data (versions, reasons), never markup
        out.print(Text(renderable) if isinstance(renderable, str) else renderable)


def enum_label(enum_type: Any, value: int) -> str:
    """``STRATEGY_BLUE_GREEN`` -> ``blue-green``; unspecified -> ``-``; unknown -> ``? (9)``."""
    try:
        name: str = enum_type.Name(value)
    except ValueError:
        return f"? ({value})"
    if name.endswith("_UNSPECIFIED"):
        return "-"
    unspecified = [v.name for v in enum_type.DESCRIPTOR.values if v.number == 0]
    prefix = unspecified[0].removesuffix("UNSPECIFIED") if unspecified else ""
    return name.removeprefix(prefix).lower().replace("_", "-")


def format_time(stamp: timestamp_pb2.Timestamp) -> str:
    """``2024-05-01 12:00:03Z`` (UTC), or ``-`` when unset."""
    if stamp.seconds == 0 and stamp.nanos == 0:
        return "-"
    moment = datetime.fromtimestamp(timestamp_from_pb(stamp), tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
