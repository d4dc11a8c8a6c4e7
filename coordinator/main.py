"""``landlord-coordinator``: run one coordinator until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from common.errors import LandlordError
from common.json_logs import setup_logging
from common.systemd_notify import notify
from coordinator.app import Coordinator
from coordinator.config import CoordinatorConfig, load_config
from coordinator.gc_pacing import GcPacing

__all__ = ["main", "serve"]

log = logging.getLogger("coordinator")


async def serve(config: CoordinatorConfig) -> None:
    coordinator = Coordinator(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await coordinator.start()
    pacing = asyncio.create_task(GcPacing().run(), name="gc pacing")
    notify("READY=1")
    await stop.wait()
    notify("STOPPING=1")
    pacing.cancel()
    await coordinator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except LandlordError as exc:
        print(f"landlord-coordinator: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format, "landlord-coordinator")
    try:
        asyncio.run(serve(config))
    except LandlordError as exc:
        log.error("coordinator failed: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
