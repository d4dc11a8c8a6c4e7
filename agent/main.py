"""``landlord-agent``: the per-host agent daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from agent.config import SETTINGS
from agent.daemon import build_data_plane, run_daemon
from common.errors import LandlordError
from common.json_logs import setup_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    return SETTINGS.parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2: a configuration problem (systemd does not restart on it)."""
    config = SETTINGS.command_line(argv, os.environ)
    if isinstance(config, int):
        return config
    setup_logging(config.log_level, config.log_format, "landlord-agent")
    try:
        plane = build_data_plane(config) if config.data_plane else None
        return asyncio.run(run_daemon(config, plane=plane))
    except (LandlordError, OSError) as exc:
        logging.getLogger("agent").error("agent failed: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
