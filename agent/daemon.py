"""The agent daemon: the service's tasks started together, stopped in order on SIGTERM.

Started in this order: supervision (adopting what runs), the data plane (re-attaching to a
running HAProxy), the stream adapter (capacity, images, request windows, GC activity), then
the coordinator stream when coordinators are configured (without them the agent runs
standalone). Stopped in the reverse order: the stream, the stream adapter and extensions, GC
and monitoring, the data plane's watcher and log receiver (HAProxy keeps serving), and
supervision last (containers keep running): they belong to the engine and HAProxy, not to
this process, so an agent restart never interrupts traffic.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from agent.agent_health import AgentHealth
from agent.config import AgentConfig
from agent.dataplane import DataPlane, DataPlaneSettings
from agent.dataplane.settings import HaproxyPaths
from agent.dataplane.wake_hold import WakeListener, write_hold_script
from agent.metrics import AgentMetrics, PlaneFigures
from agent.runtime.docker_runtime import DockerRuntime
from agent.runtime.protocol import ContainerRuntime
from agent.service import AgentService
from agent.stream.adapter import StreamAdapter
from agent.stream.host_commands import RoutingPlane
from agent.stream.session import CoordinatorStream, StreamSettings
from common.clock import SystemClock
from common.errors import LandlordError
from common.metrics_http import MetricsServer, serve_metrics
from common.schema import release
from common.systemd_notify import notify, watchdog_interval, watchdog_pings
from common.transport import ClientCertificates, ExpiryWatch, TlsSettings

__all__ = ["Extension", "build_data_plane", "reload_certificates", "run_daemon",
           "stream_settings"]

log = logging.getLogger(__name__)
Extension = Callable[[AgentService, asyncio.Event], Coroutine[Any, Any, None]]
"""A task plugged into the daemon, run until stop (stopped after the stream adapter)."""
DRAIN_TIMEOUT = 15.0


def build_data_plane(config: AgentConfig) -> DataPlane:
    """This host's HAProxy under ``DATA_DIR/haproxy``, serving on the advertise address
    (with the Lua script that holds requests to collected units when ``wake_port`` is set;
    the listener it asks is started with the stream adapter)."""
    hold = HaproxyPaths(config.data_dir / "haproxy").hold_script
    if config.wake_port:
        write_hold_script(hold, config.advertise_address, config.wake_port, config.wake_hold,
                          config.wake_queue)
    return DataPlane(config.data_dir, config.advertise_address, host=config.host_id,
                     settings=DataPlaneSettings(haproxy_binary=config.haproxy_binary,
                                                threads=config.haproxy_threads,
                                                log_sample_every=(
                                                    config.request_log_sample_every),
                                                metrics_listen=config.haproxy_metrics_listen,
                                                hold_script=str(hold) if config.wake_port
                                                else ""))


def stream_settings(config: AgentConfig) -> StreamSettings:
    """How to reach the coordinators (raises InvalidArgument for missing TLS files)."""
    tls = TlsSettings(ca_file=config.tls_ca_file, cert_file=config.tls_cert_file,
                      key_file=config.tls_key_file)
    return StreamSettings(coordinators=config.coordinators, tls=tls)


def reload_certificates(certificates: ClientCertificates | None,
                        expiry: ExpiryWatch | None = None) -> bool:
    """SIGHUP: read the TLS files again for the next connection (the open stream keeps its
    TLS session). Bad files keep the previous ones (logged); False then, or without TLS."""
    if certificates is None:
        log.info("reload asked, but the agent has no TLS files: nothing to reload")
        return False
    tls = certificates.tls
    try:
        certificates.reload()
    except LandlordError as exc:
        log.error("cannot reload the TLS files, keeping the previous ones: %s", exc)
        return False
    log.info("reloaded the certificate %s, its key and the CA bundle %s; the next connection "
             "to a coordinator uses them (the open stream stays)",
             tls.cert_file or "(none)", tls.ca_file or "(none)")
    if expiry is not None:
        expiry.recheck()
    return True


async def _open_host(service: AgentService, plane: RoutingPlane | None) -> StreamAdapter | None:
    """Start the data plane and prepare the stream adapter (none when neither a data plane
    nor coordinators are configured); on failure leave nothing half-started."""
    config = service.config
    if plane is None and not config.coordinators:
        return None
    adapter = StreamAdapter(service, plane, agent_version=release())
    if plane is not None:
        await plane.start()
    try:
        await adapter.prepare()
        if plane is not None and config.wake_port:
            adapter.wake_listener = await _listen_for_wakes(config, adapter)
    except BaseException:
        if plane is not None:
            await plane.close()
        raise
    return adapter


async def _listen_for_wakes(config: AgentConfig, adapter: StreamAdapter) -> WakeListener | None:
    """The listener HAProxy's hold script asks; without it requests are not held (503 at
    once, as before), which is logged, never fatal."""
    listener = WakeListener(config.advertise_address, config.wake_port, adapter.wake_asked)
    try:
        await listener.start()
    except OSError as exc:
        log.error("cannot listen for wakes on %s:%d (%s): requests to collected units "
                  "are not held", config.advertise_address, config.wake_port, exc)
        return None
    return listener


async def _open_metrics(service: AgentService, metrics: AgentMetrics,
                        client: CoordinatorStream | None, plane: RoutingPlane | None
                        ) -> MetricsServer | None:
    """/metrics and /healthz on ``metrics_listen`` (None when off or the port is taken)."""
    figures = plane if isinstance(plane, PlaneFigures) else None
    metrics.watch(service.records.all, service.monitor.figures, stream=client, plane=figures)
    health = AgentHealth(service.config.host_id, service.runtime, client, figures)
    return await serve_metrics(service.config.metrics_endpoint, metrics.registry, "agent",
                               health=health, refresh=metrics.refresh)


async def _stop_task(task: asyncio.Task[None], cancel: bool = False) -> None:
    """Wait for ``task`` to end (cancelling it first with ``cancel``), at most DRAIN_TIMEOUT."""
    if cancel:
        task.cancel()
    done, _ = await asyncio.wait([task], timeout=DRAIN_TIMEOUT)
    if not done:
        log.warning("task %s did not stop in %s s", task.get_name(), DRAIN_TIMEOUT)
    elif not task.cancelled() and task.exception() is not None:
        log.error("task %s failed: %r", task.get_name(), task.exception())


async def run_daemon(
    config: AgentConfig,
    *,
    runtime: ContainerRuntime | None = None,
    extensions: Sequence[Extension] = (),
    stop: asyncio.Event | None = None,
    plane: RoutingPlane | None = None,
) -> int:
    """Run until ``stop`` (or SIGTERM/SIGINT). ``plane``: this host's data plane, started
    here (see build_data_plane); None runs without one."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    coordinated = stream_settings(config) if config.coordinators else None  # checked first
    certificates = (ClientCertificates(coordinated.tls)
                    if coordinated is not None and coordinated.tls.enabled else None)
    expiry = (ExpiryWatch(config.tls_cert_file, lambda: certificates.certificate,
                          SystemClock()) if certificates and config.tls_cert_file else None)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_certificates, certificates, expiry)
    try:
        await _serve(config, runtime, extensions, stop, plane, coordinated, certificates,
                     expiry)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    return 0


async def _serve(config: AgentConfig, runtime: ContainerRuntime | None,
                 extensions: Sequence[Extension], stop: asyncio.Event,
                 plane: RoutingPlane | None, coordinated: StreamSettings | None,
                 certificates: ClientCertificates | None, expiry: ExpiryWatch | None) -> None:
    service = AgentService(config, runtime or DockerRuntime(config.docker_url))
    metrics = AgentMetrics()
    service.bus.listen(metrics.on_event)  # before adoption: its recoveries count too
    report = await service.open()
    try:
        adapter = await _open_host(service, plane)
    except (LandlordError, OSError):
        await service.close()
        raise
    log.info("agent %s supervising", config.host_id, extra={
        "adopted": report.adopted, "recovered": report.recovered, "launched": report.launched,
        "rebuilt": report.rebuilt, "strays_removed": report.strays_removed,
        "data_plane": plane is not None, "coordinators": list(config.coordinators)})
    if config.coordinators and not config.tls_cert_file:
        log.warning("INSECURE (insecure = true): the stream to %s is plain text; anyone on "
                    "the way may read this host's commands and speak for it",
                    ", ".join(config.coordinators))
    notify(f"READY=1\nSTATUS=supervising {len(service.instances())} instances")
    interval = config.watchdog_interval or watchdog_interval()
    stream: asyncio.Task[None] | None = None
    client: CoordinatorStream | None = None
    ordered: list[asyncio.Task[None]] = []
    if adapter is not None:
        adapter.command_timed = metrics.observe_command
        adapter.wake_counted = metrics.count_wake
    if adapter is not None and coordinated is not None:
        client = CoordinatorStream(adapter, coordinated, certificates)
        stream = asyncio.create_task(client.run(), name="coordinator-stream")
    endpoint = await _open_metrics(service, metrics, client, plane)
    if adapter is not None:
        ordered.append(asyncio.create_task(adapter.run(stop), name="stream-adapter"))
    # stopped in this order: (stream,) stream adapter, extensions, then GC and monitoring
    ordered += [asyncio.create_task(ext(service, stop), name=f"extension-{i}")
                for i, ext in enumerate(extensions)]
    ordered.append(asyncio.create_task(service.run(stop), name="monitor-gc"))
    if interval > 0:
        ordered.append(asyncio.create_task(watchdog_pings(interval, stop), name="watchdog"))
    if expiry is not None:
        ordered.append(asyncio.create_task(expiry.run(stop), name="certificate-expiry"))
    await stop.wait()
    notify("STOPPING=1")
    log.info("stopping agent %s (containers and haproxy keep running)", config.host_id)
    if endpoint is not None:
        await endpoint.close()
    if stream is not None:
        await _stop_task(stream, cancel=True)  # the coordinator sees the session end first
    for task in ordered:
        await _stop_task(task)
    if plane is not None:
        await plane.close()  # watcher and request log only: haproxy keeps serving
    await service.close()  # supervision last: health watchers and the event stream
