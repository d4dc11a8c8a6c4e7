"""``landlord-agent``: the per-host agent daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.config import ENV_PREFIX, config_fields, load_config
from agent.daemon import build_data_plane, run_daemon
from common.errors import LandlordError
from common.json_logs import setup_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landlord-agent",
        description="Landlord per-host agent: runs unit instances in Docker with limits, "
                    "health checks, crash recovery and garbage collection. Settings come "
                    f"from --config (TOML), then {ENV_PREFIX}<NAME> variables, then flags.")
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="TOML file (keys at top level or in an [agent] table)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the settings, print them and exit")
    for name, help_text, default in config_fields():
        flag = "--" + name.replace("_", "-")
        shown = ",".join(default) if isinstance(default, tuple) else default
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=f"{help_text} (default: {shown})")
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(),
                                help=f"{help_text} (default: {shown})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = {k: v for k, v in vars(args).items() if k not in ("config", "check_config")}
    try:
        config = load_config(args.config, os.environ, flags)
    except LandlordError as exc:
        print(f"landlord-agent: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        for name, _, _ in config_fields():
            print(f"{name} = {getattr(config, name)!r}")
        return 0
    setup_logging(config.log_level, config.log_format, "landlord-agent")
    try:
        plane = build_data_plane(config) if config.data_plane else None
        return asyncio.run(run_daemon(config, plane=plane))
    except (LandlordError, OSError) as exc:
        logging.getLogger("agent").error("agent failed: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
