"""The real agent daemon's /metrics and /healthz: real Docker, this host's real HAProxy and
a stand-in coordinator over gRPC. A killed container shows up as a crash, a recovery and a
dump; the health endpoint turns 503 when the coordinator goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent_fixtures import AgentHarness, free_port, make_spec, wait_event
from stand_in import StandInCoordinator, fleet_control

from agent.daemon import build_data_plane, run_daemon
from agent.instances.events import EventType
from agent.instances.resource_monitor import main_process_pid
from agent.service import AgentService
from common.gc_kinds import GcKind
from common.gen.landlord.v1 import agent_pb2_grpc
from common.stream_commands import CollectGarbage
from common.transport.factory import bound_server, create_server
from coordinator.fleet.sessions import Fleet
from tests.support import async_eventually
from tests.support.prometheus import Scrape, get_json, scrape


@contextlib.asynccontextmanager
async def stand_in() -> AsyncIterator[tuple[str, Any, Fleet]]:
    server = create_server()
    control = fleet_control()
    agent_pb2_grpc.add_AgentStreamServicer_to_server(StandInCoordinator(control), server)
    port = bound_server(server, "127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", server, control.fleet
    finally:
        await server.stop(None)


async def test_daemon_metrics_and_health(harness: AgentHarness, tmp_path: Path) -> None:
    metrics_port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{metrics_port}"
    async with stand_in() as (address, coordinator, fleet):
        config = harness.config(coordinators=(address,), insecure=True,
                                metrics_listen=f"127.0.0.1:{metrics_port}",
                                data_dir=tmp_path / "agent")
        plane = build_data_plane(config)
        services: list[AgentService] = []

        async def capture(service: AgentService, stop: asyncio.Event) -> None:
            services.append(service)
            await stop.wait()

        stop = asyncio.Event()
        daemon = asyncio.create_task(run_daemon(config, extensions=[capture], stop=stop,
                                                plane=plane))
        try:
            async def healthy() -> Any:
                status, body = await get_json(f"{base}/healthz")
                return body if status == 200 else None

            body = await async_eventually(healthy, timeout=30, interval=0.2)
            assert body == {"healthy": True, "host": config.host_id,
                            "coordinator": {"connected": True, "id": "stand-in",
                                            "address": address},
                            "docker": {"ok": True, "error": ""},
                            "haproxy": {"ok": True, "error": ""}}
            service = services[0]
            assert fleet.send(config.host_id, CollectGarbage((GcKind.CACHE,)))
            spec = make_spec("metrics-1")
            view = await service.start_instance(spec)
            info = await service.runtime.inspect(view.container_id or "")
            os.kill(main_process_pid(info.pid), signal.SIGKILL)
            await wait_event(service, EventType.RECOVERY_SUCCESS)
            await wait_event(service, EventType.CRASH_DUMP)

            async def counted() -> Scrape | None:
                found = await scrape(f"{base}/metrics")
                labels = {"instance_id": "metrics-1", "apartment": "test", "unit": "demo",
                          "version": "1.0.0"}
                sampled = found.value("landlord_instance_memory_usage_bytes", **labels)
                return found if sampled and found.value(
                    "landlord_agent_instances", state="running") == 1.0 and found.value(
                    "landlord_agent_command_duration_seconds_count", kind="gc",
                    outcome="succeeded") == 1.0 else None

            metrics = await async_eventually(counted, timeout=20, interval=0.5)
            assert metrics is not None
            recoveries = "landlord_agent_recoveries_total"
            assert metrics.value(recoveries, kind="container_crash", outcome="attempted") == 1
            assert metrics.value(recoveries, kind="container_crash", outcome="succeeded") == 1
            assert metrics.value("landlord_agent_container_crashes_total",
                                 oom_killed="false") == 1.0
            assert metrics.value("landlord_agent_dumps_total", kind="crash") == 1.0
            assert metrics.value("landlord_agent_instances", state="error") == 0.0
            assert metrics.value("landlord_agent_stream_connected") == 1.0
            assert (metrics.value("landlord_agent_stream_sessions_total") or 0) >= 1
            assert (metrics.value("landlord_agent_stream_reports_total") or 0) >= 1
            assert metrics.value("landlord_agent_request_log_dropped_lines_total") == 0.0
            assert metrics.value("landlord_agent_gc_actions_total", kind="cache") == 0.0
            cpu = metrics.matching("landlord_instance_cpu_seconds_total", instance_id="metrics-1")
            assert len(cpu) == 1 and min(cpu.values()) > 0

            await coordinator.stop(None)  # the coordinator goes away

            async def unhealthy() -> Any:
                status, body = await get_json(f"{base}/healthz")
                return body if status == 503 else None

            body = await async_eventually(unhealthy, timeout=10, interval=0.2)
            assert body["healthy"] is False and body["coordinator"]["connected"] is False
            assert body["docker"]["ok"] and body["haproxy"]["ok"]
        finally:
            stop.set()
            await asyncio.wait_for(daemon, 30)
            await plane.shutdown()
