"""Settings as frozen dataclasses: what a field says about itself, how a value is read, and
what is wrong with a value, for both daemons.

A field made with :func:`setting` carries its help text, its kind (how text and TOML values
are converted; inferred from the annotation unless given) and its limits. ``validate`` checks
every field's limits plus the class's own cross-field rules and raises one
:class:`ConfigInvalid` that lists every problem. The loader (``common.settings_loader``)
adds where each bad value came from.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument
from common.resources import parse_bandwidth, parse_bytes, parse_cpu

__all__ = ["KINDS", "LOG_FORMATS", "LOG_LEVELS", "ConfigInvalid", "Problem", "check_host_port",
           "check_host_ports", "check_ip", "check_log_level", "convert", "field_problems",
           "help_of", "kind_of", "setting", "validate"]

KINDS = ("str", "int", "float", "bool", "list", "path", "bytes", "bits", "cpu")
"""str, int, float, bool; list (of strings: a TOML array, comma separated in text); path;
bytes ("512Mi"), bits per second ("10mbit") and cpu cores ("500m") as common.resources
reads them."""
_KIND_OF_TYPE = {"str": "str", "int": "int", "float": "float", "bool": "bool", "Path": "path",
                 "tuple[str, ...]": "list"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

Check = Callable[[Any], "str | None"]
"""A per-field rule: the problem with a (converted) value, or None."""


def setting(default: Any, help_text: str, kind: str = "", *, ge: float | None = None,
            gt: float | None = None, le: float | None = None, choices: tuple[str, ...] = (),
            check: Check | None = None, group: str = "") -> Any:
    """A dataclass field with its documentation and limits. ``group`` starts a new group of
    settings in the generated sample and docs."""
    if kind and kind not in KINDS:
        raise ValueError(f"unknown setting kind {kind!r}")
    return field(default=default, metadata={
        "help": help_text, "kind": kind, "ge": ge, "gt": gt, "le": le, "choices": choices,
        "check": check, "group": group})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration; ``settings`` names the fields it is about."""

    message: str
    settings: tuple[str, ...] = ()


class ConfigInvalid(InvalidArgument):
    """A configuration with one or more problems; ``str()`` joins them, ``problems`` lists
    them one by one."""

    def __init__(self, what: str, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"invalid {what} configuration: "
                         + "; ".join(p.message for p in self.problems),
                         problems=[p.message for p in self.problems])


def kind_of(f: Field[Any]) -> str:
    kind = f.metadata.get("kind", "")
    return str(kind) if kind else _KIND_OF_TYPE.get(str(f.type), "str")


def help_of(f: Field[Any]) -> str:
    """The help text with the field's limits, as the docs and flags show it."""
    meta = f.metadata
    limits = [f"{word} {meta[key]:g}" for key, word in (("ge", ">="), ("gt", ">"), ("le", "<="))
              if meta.get(key) is not None]
    if meta.get("choices"):
        limits.append("one of " + ", ".join(meta["choices"]))
    return str(meta.get("help", "")) + (f" ({'; '.join(limits)})" if limits else "")


def _describe(value: Any) -> str:
    for types, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                        (str, "a string"), (list | tuple, "an array"), (dict, "a table")):
        if isinstance(value, types):
            return f"{name} ({value!r})" if not isinstance(value, dict) else name
    return type(value).__name__


def convert(kind: str, value: Any, text: bool) -> Any:
    """The typed value of ``value`` (from TOML when ``text`` is False, else from the
    environment or a flag). Raises ValueError with a message that does not name the setting."""
    if kind in ("str", "path"):
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_describe(value)}")
        return Path(value) if kind == "path" else value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {_describe(value)}")
    if kind == "list":
        if text and isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        raise ValueError(f"expected an array of strings, got {_describe(value)}")
    if kind in ("int", "float"):
        return _number(kind, value, text)
    return _amount(kind, value)


def _number(kind: str, value: Any, text: bool) -> int | float:
    if text and isinstance(value, str):
        try:
            number: int | float = int(value.strip()) if kind == "int" else float(value.strip())
        except ValueError:
            what = "a whole number" if kind == "int" else "a number"
            raise ValueError(f"{value!r} is not {what}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float) or (
            kind == "int" and not isinstance(value, int)):
        raise ValueError(f"expected {'an integer' if kind == 'int' else 'a number'}, "
                         f"got {_describe(value)}")
    else:
        number = value if kind == "int" else float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _amount(kind: str, value: Any) -> int | float:
    try:
        if isinstance(value, bool):
            pass
        elif kind == "cpu" and isinstance(value, str | int | float):
            return parse_cpu(value, "value")
        elif kind != "cpu" and isinstance(value, str | int):
            return (parse_bytes if kind == "bytes" else parse_bandwidth)(value, "value")
    except InvalidArgument as exc:
        raise ValueError(str(exc).removeprefix("value: ")) from None
    raise ValueError(f"expected a string or a number, got {_describe(value)}")


def field_problems(config: Any) -> list[Problem]:
    """Each field's limits (ge, gt, le, choices, check) applied to its value."""
    out: list[Problem] = []
    for f in fields(config):
        value, meta, name = getattr(config, f.name), f.metadata, f.name
        if isinstance(value, int | float) and not isinstance(value, bool):
            for key, ok, word in (("ge", value.__ge__, ">="), ("gt", value.__gt__, ">"),
                                  ("le", value.__le__, "<=")):
                bound = meta.get(key)
                if bound is not None and not ok(bound):
                    out.append(Problem(f"{name} must be {word} {bound:g}, got {value:g}", (name,)))
        if meta.get("choices") and value not in meta["choices"]:
            out.append(Problem(f"{name} {value!r} is not one of "
                               f"{', '.join(meta['choices'])}", (name,)))
        check = meta.get("check")
        message = check(value) if check is not None else None
        if message:
            out.append(Problem(f"{name}: {message}", (name,)))
    return out


def validate(config: Any, what: str, rules: Iterable[Problem]) -> None:
    """Raise ConfigInvalid naming every problem: field limits first, then ``rules``."""
    problems = field_problems(config) + list(rules)
    if problems:
        raise ConfigInvalid(what, problems)


def check_host_port(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"{value!r} is not host:port"
    return None


def check_host_ports(values: tuple[str, ...]) -> str | None:
    return "; ".join(filter(None, map(check_host_port, values))) or None


def check_ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def check_log_level(value: str) -> str | None:
    return None if value.upper() in LOG_LEVELS else f"{value!r} is not {', '.join(LOG_LEVELS)}"
