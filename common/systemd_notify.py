"""sd_notify(3) without libsystemd, for both daemons (Type=notify units).

One datagram to ``$NOTIFY_SOCKET`` per state; a no-op when not started by systemd.
``watchdog_pings`` is the task both daemons run in their event loop under ``WatchdogSec``:
when the loop hangs (or the process is stopped) the pings stop and systemd kills and
restarts the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "watchdog_interval", "watchdog_pings"]


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. "READY=1", "WATCHDOG=1", "STOPPING=1"); False if not sent."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC) in seconds; 0 when unset or
    meant for another process (WATCHDOG_PID)."""
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 1e6 / 2


async def watchdog_pings(interval: float, stop: asyncio.Event,
                         environ: Mapping[str, str] | None = None) -> None:
    """Send WATCHDOG=1 now and every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        notify("WATCHDOG=1", environ)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
