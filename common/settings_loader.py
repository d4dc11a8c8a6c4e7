"""The one settings loader of both daemons: defaults < TOML file < environment < flags.

:class:`SettingsSpec` ties a settings dataclass to its TOML table (``[agent]``), environment
prefix (``LANDLORD_AGENT_``) and program. It builds the argparse flags from the fields, reads
the file (keys in the daemon's table or at top level; the other daemon's table is ignored so
one file can hold both), converts every value by its kind and reports every problem at once,
one line each, naming the setting and where its value came from: ``FILE:key``, the variable,
or the flag. ``command_line`` is what a daemon's ``main`` calls: ``--check-config`` and
``--print-sample-config`` end there, with exit status 0, or 2 on any problem.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

from common.settings import ConfigInvalid, Problem, convert, kind_of
from common.settings_text import (
    effective_toml,
    flag_name,
    markdown_reference,
    sample_toml,
    toml_value,
)

__all__ = ["SECTIONS", "SettingsSpec"]

T = TypeVar("T")
SECTIONS = ("agent", "coordinator")
"""The daemons' TOML tables; a file may hold both."""


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class SettingsSpec(Generic[T]):
    """How one daemon's settings dataclass ``cls`` is configured."""

    cls: type[T]
    section: str
    program: str
    description: str

    @property
    def env_prefix(self) -> str:
        return f"LANDLORD_{self.section.upper()}_"

    @property
    def names(self) -> list[str]:
        return [f.name for f in fields(self.cls)]  # type: ignore[arg-type]

    def load(self, path: Path | None = None, environ: Mapping[str, str] | None = None,
             flags: Mapping[str, Any] | None = None) -> T:
        """Merge and convert; raises ConfigInvalid listing every problem with its source."""
        raw: dict[str, tuple[Any, str, bool]] = {}  # name -> (value, source, is text)
        problems: list[str] = []
        if path is not None:
            table, problems = self._read(path)
            raw.update({k: (v, f"{path}:{k}", False) for k, v in table.items()})
        for key, value in sorted((environ or {}).items()):
            if not key.startswith(self.env_prefix) or key == self.env_prefix + "CONFIG":
                continue
            name = key[len(self.env_prefix):].lower()
            if name in self.names:
                raw[name] = (value, key, True)
            else:
                problems.append(f"{key}: unknown setting"
                                f"{_suggest(name.upper(), [n.upper() for n in self.names])}")
        for name, value in (flags or {}).items():
            if value is not None:
                raw[name] = (value, f"--{name.replace('_', '-')}", not isinstance(value, bool))
        by_name = {f.name: f for f in fields(self.cls)}  # type: ignore[arg-type]
        values: dict[str, Any] = {}
        for name, (value, source, text) in raw.items():
            if name not in by_name:
                problems.append(f"{source}: unknown setting{_suggest(name, self.names)}")
                continue
            try:
                values[name] = convert(kind_of(by_name[name]), value, text)
            except ValueError as exc:
                problems.append(f"{source}: {name}: {exc}")
        try:
            config = self.cls(**values)
        except ConfigInvalid as exc:
            problems += [self._locate(p, raw, values) for p in exc.problems
                         if all(s in values or s not in raw for s in p.settings)]
        if problems:
            raise ConfigInvalid(self.section, [Problem(p) for p in problems])
        return config

    @staticmethod
    def _locate(problem: Problem, raw: Mapping[str, tuple[Any, str, bool]],
                values: Mapping[str, Any]) -> str:
        sources = [raw[s][1] for s in problem.settings if s in raw and s in values]
        return f"{', '.join(sources)}: {problem.message}" if sources else problem.message

    def _read(self, path: Path) -> tuple[dict[str, Any], list[str]]:
        try:
            document = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigInvalid(self.section, [Problem(f"{path}: no such config file")]) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigInvalid(self.section, [Problem(f"{path}: cannot read config file: "
                                                       f"{reason}")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigInvalid(self.section, [Problem(f"{path}: not valid TOML: {exc}")]
                                ) from None
        problems: list[str] = []
        if self.section in document:
            table = document[self.section]
            if not isinstance(table, dict):
                return {}, [f"{path}:{self.section}: expected a table [{self.section}]"]
            for key in document:
                if key not in SECTIONS and key != self.section:
                    problems.append(f"{path}:{key}: unknown setting (this file has an "
                                    f"[{self.section}] table; put settings in it)")
        else:
            table = {k: v for k, v in document.items() if k not in SECTIONS}
        return table, problems

    def parser(self) -> argparse.ArgumentParser:
        """``--config``, ``--check-config``, ``--print-sample-config`` and one flag a setting."""
        parser = argparse.ArgumentParser(
            prog=self.program,
            description=f"{self.description} Settings come from --config (TOML: keys in an "
                        f"[{self.section}] table or at top level; or {self.env_prefix}CONFIG), "
                        f"then {self.env_prefix}<NAME> variables, then flags. Every setting: "
                        "docs/configuration.md.")
        parser.add_argument("--config", type=Path, metavar="PATH",
                            help="TOML file with any of the settings below")
        parser.add_argument("--check-config", action="store_true",
                            help="validate the settings, print the effective configuration as "
                                 "TOML and exit (status 2 and one line per problem if invalid)")
        parser.add_argument("--print-sample-config", action="store_true",
                            help="print a commented sample config file and exit")
        for f in fields(self.cls):  # type: ignore[arg-type]
            shown = toml_value(kind_of(f), f.default)
            text = f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%")
            if kind_of(f) == "bool":
                parser.add_argument(flag_name(f), dest=f.name, default=None, help=text,
                                    action=argparse.BooleanOptionalAction)
            else:
                parser.add_argument(flag_name(f), dest=f.name, default=None, help=text,
                                    metavar=f.name.upper())
        return parser

    def from_args(self, args: argparse.Namespace, environ: Mapping[str, str]) -> T:
        """Load with the flags in ``args`` (from :meth:`parser`); the file is ``--config``,
        else ``<PREFIX>CONFIG``."""
        flags = {name: getattr(args, name) for name in self.names}
        path = args.config or (Path(environ[self.env_prefix + "CONFIG"])
                               if environ.get(self.env_prefix + "CONFIG") else None)
        return self.load(path, environ, flags)

    def from_argv(self, argv: Sequence[str] | None, environ: Mapping[str, str]) -> T:
        return self.from_args(self.parser().parse_args(argv), environ)

    def command_line(self, argv: Sequence[str] | None,
                     environ: Mapping[str, str]) -> T | int:
        """The loaded settings, or the exit status when the command ends here (after
        ``--check-config``, ``--print-sample-config`` or a problem, printed to stderr)."""
        args = self.parser().parse_args(argv)
        if args.print_sample_config:
            print(self.sample(), end="")
            return 0
        try:
            config = self.from_args(args, environ)
        except ConfigInvalid as exc:
            for problem in exc.problems:
                print(f"{self.program}: {problem.message}", file=sys.stderr)
            return 2
        if args.check_config:
            print(effective_toml(self.section, config), end="")
            return 0
        return config

    def sample(self) -> str:
        return sample_toml(self.cls, self.section, self.program, self.env_prefix)

    def reference(self) -> str:
        return markdown_reference(self.cls, self.section, self.program, self.env_prefix)
