"""``landlord-coordinator``: run one coordinator until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence

from common.errors import LandlordError
from common.json_logs import setup_logging
from common.systemd_notify import notify, watchdog_interval, watchdog_pings
from coordinator.app import Coordinator
from coordinator.config import SETTINGS, CoordinatorConfig
from coordinator.gc_pacing import GcPacing

__all__ = ["build_parser", "main", "serve"]

log = logging.getLogger("coordinator")


def build_parser() -> argparse.ArgumentParser:
    return SETTINGS.parser()


async def serve(config: CoordinatorConfig, environ: Mapping[str, str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP re-reads the CA bundle and the CRL (open streams
    stay). Under systemd: READY=1 once the server listens, then WATCHDOG=1 from this event
    loop at half of WatchdogSec, so a hung loop gets restarted."""
    coordinator = Coordinator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, coordinator.reload_trust)
    await coordinator.start()
    tasks = [asyncio.create_task(GcPacing().run(), name="gc pacing")]
    notify(f"READY=1\nSTATUS=serving on {config.listen}", environ)
    interval = watchdog_interval(environ)
    if interval > 0:
        tasks.append(asyncio.create_task(watchdog_pings(interval, stop, environ),
                                         name="watchdog"))
    await stop.wait()
    notify("STOPPING=1", environ)
    loop.remove_signal_handler(signal.SIGHUP)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await coordinator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 2: a configuration problem (systemd does not restart on it)."""
    config = SETTINGS.command_line(argv, os.environ)
    if isinstance(config, int):
        return config
    setup_logging(config.log_level, config.log_format, "landlord-coordinator")
    try:
        asyncio.run(serve(config))
    except LandlordError as exc:
        log.error("coordinator failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
