"""The agent daemon: the service's tasks started together, stopped in order on SIGTERM.

Containers are never stopped here: they belong to the engine, not to this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from agent.config import AgentConfig
from agent.runtime.docker_runtime import DockerRuntime
from agent.runtime.protocol import ContainerRuntime
from agent.sdnotify import notify, watchdog_interval
from agent.service import AgentService

__all__ = ["Extension", "run_daemon"]

log = logging.getLogger(__name__)
Extension = Callable[[AgentService, asyncio.Event], Coroutine[Any, Any, None]]
"""A task plugged into the daemon (coordinator stream, data plane), run until stop."""
DRAIN_TIMEOUT = 15.0


async def _watchdog(interval: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        notify("WATCHDOG=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def run_daemon(
    config: AgentConfig,
    *,
    runtime: ContainerRuntime | None = None,
    extensions: Sequence[Extension] = (),
    stop: asyncio.Event | None = None,
) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = AgentService(config, runtime or DockerRuntime(config.docker_url))
    report = await service.open()
    log.info("agent %s supervising", config.host_id, extra={
        "adopted": report.adopted, "recovered": report.recovered, "launched": report.launched,
        "rebuilt": report.rebuilt, "strays_removed": report.strays_removed})
    notify(f"READY=1\nSTATUS=supervising {len(service.instances())} instances")
    interval = config.watchdog_interval or watchdog_interval()
    # stopped in this order: extensions (stream, data plane), then GC and monitoring
    ordered: list[asyncio.Task[None]] = [
        asyncio.create_task(ext(service, stop), name=f"extension-{i}")
        for i, ext in enumerate(extensions)]
    ordered.append(asyncio.create_task(service.run(stop), name="monitor-gc"))
    if interval > 0:
        ordered.append(asyncio.create_task(_watchdog(interval, stop), name="watchdog"))
    await stop.wait()
    notify("STOPPING=1")
    log.info("stopping agent %s (containers keep running)", config.host_id)
    for task in ordered:
        try:
            await asyncio.wait_for(task, DRAIN_TIMEOUT)
        except TimeoutError:
            log.warning("task %s did not stop in %s s", task.get_name(), DRAIN_TIMEOUT)
        except Exception as exc:
            log.error("task %s failed: %r", task.get_name(), exc)
    await service.close()  # supervision last: health watchers and the event stream
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    return 0
