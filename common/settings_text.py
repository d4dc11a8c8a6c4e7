"""Settings as text: TOML values that load back, the commented sample config file and the
Markdown reference, all from the dataclass fields (``common.settings``)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from common.resources import parse_bandwidth, parse_bytes
from common.settings import help_of, kind_of

__all__ = ["effective_toml", "env_name", "flag_name", "markdown_reference", "quote",
           "sample_toml", "toml_value"]

_NAMED_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                  "\f": "\\f", "\r": "\\r"}
_BYTE_UNITS = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))
_BIT_UNITS = (("gbit", 1000**3), ("mbit", 1000**2), ("kbit", 1000))


def quote(text: str) -> str:
    """A TOML basic string holding exactly ``text``."""
    out = []
    for ch in text:
        if ch in _NAMED_ESCAPES:
            out.append(_NAMED_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _pretty_amount(kind: str, amount: int) -> str:
    units, parse = (_BYTE_UNITS, parse_bytes) if kind == "bytes" else (_BIT_UNITS,
                                                                      parse_bandwidth)
    for unit, scale in units:
        if amount and amount % scale == 0 and parse(f"{amount // scale}{unit}") == amount:
            return quote(f"{amount // scale}{unit}")
    return repr(amount)


def toml_value(kind: str, value: Any) -> str:
    """``value`` of a setting of ``kind`` as a TOML value the loader reads back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind in ("bytes", "bits") and isinstance(value, int):
        return _pretty_amount(kind, value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(quote(str(v)) for v in value) + "]"
    if isinstance(value, str | Path):
        return quote(str(value))
    raise TypeError(f"no TOML form for {value!r}")


def env_name(prefix: str, f: Field[Any]) -> str:
    return prefix + f.name.upper()


def flag_name(f: Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def effective_toml(section: str, config: Any) -> str:
    """Every setting's value in ``config`` as a ``[section]`` table."""
    lines = [f"[{section}]"]
    lines += [f"{f.name} = {toml_value(kind_of(f), getattr(config, f.name))}"
              for f in fields(config)]
    return "\n".join(lines) + "\n"


def _groups(cls: type) -> Iterator[tuple[str, list[Field[Any]]]]:
    group: tuple[str, list[Field[Any]]] = ("", [])
    for f in fields(cls):
        if f.metadata.get("group") and group[1]:
            yield group
            group = (str(f.metadata["group"]), [])
        elif f.metadata.get("group"):
            group = (str(f.metadata["group"]), [])
        group[1].append(f)
    if group[1]:
        yield group


def sample_toml(cls: type, section: str, program: str, env_prefix: str) -> str:
    """The commented sample: every setting commented out, with its help and default."""
    lines = [
        f"# {program} settings. Every setting below is commented out and shows its default;",
        "# uncomment a line to change it. Precedence: defaults < this file <",
        f"# {env_prefix}<NAME> environment variables < --<name> command-line flags.",
        f"# Check a change with: {program} --config <this file> --check-config",
        f"# (this file is `{program} --print-sample-config`; see docs/configuration.md).",
        "",
        f"[{section}]",
    ]
    for group, members in _groups(cls):
        if group:
            lines += ["", f"# --- {group} ---"]
        for f in members:
            lines.append("")
            lines += textwrap.wrap(help_of(f), 88, initial_indent="# ",
                                   subsequent_indent="# ")
            lines.append(f"#{f.name} = {toml_value(kind_of(f), f.default)}")
    return "\n".join(lines) + "\n"


def markdown_reference(cls: type, section: str, program: str, env_prefix: str) -> str:
    """A Markdown section: one table row per setting (name, env, flag, default, meaning)."""
    lines = [f"## {program}", "",
             f"TOML table `[{section}]` (or top-level keys) in the file given by `--config` or "
             f"`{env_prefix}CONFIG`; environment `{env_prefix}<NAME>`; flags `--<name>`.", ""]
    for group, members in _groups(cls):
        if group:
            lines += [f"### {group}", ""]
        lines += ["| setting | environment / flag | default | meaning |",
                  "| --- | --- | --- | --- |"]
        for f in members:
            default = toml_value(kind_of(f), f.default).replace("|", "\\|")
            meaning = help_of(f).replace("|", "\\|")
            lines.append(f"| `{f.name}` | `{env_name(env_prefix, f)}` `{flag_name(f)}` | "
                         f"`{default}` | {meaning} |")
        lines.append("")
    return "\n".join(lines)
