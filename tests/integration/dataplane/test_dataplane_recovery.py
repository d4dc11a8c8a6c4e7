"""HAProxy outliving the agent, and the agent outliving HAProxy."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import time

from agent.dataplane import DataPlane, ServerState
from agent.dataplane.haproxy_process import HaproxyProcess
from tests.integration.dataplane.dataplane_fixtures import (
    BackendFactory,
    PlaneFactory,
    free_port,
    wait_all_up,
)
from tests.integration.dataplane.dataplane_load import LoadGenerator, between, failures, share
from tests.support import async_eventually


def served_versions(port: int, count: int) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.2", port, timeout=5)
    versions = []
    try:
        for _ in range(count):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            versions.append(response.getheader("X-Served-Version", ""))
    finally:
        conn.close()
    return versions


async def _wait_count(load: LoadGenerator, target: int) -> None:
    async def reached() -> bool:
        return load.count >= target

    await async_eventually(reached, timeout=30, interval=0.02)


async def test_killed_haproxy_is_restarted_with_the_same_weights_and_states(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    await plane.ensure_unit("web", port)
    a = backend("a", "1.0.0", "127.0.0.3")
    b = backend("b", "2.0.0", "127.0.0.4")
    c = backend("c", "1.0.0", "127.0.0.4")
    for item in (a, b, c):
        await plane.add_server("web", item.name, item.addr, item.port, item.version, 100)
    await wait_all_up(plane, "web", 3)
    await plane.set_weights("web", {"a": 30, "b": 70})
    await plane.set_state("web", "c", ServerState.MAINT)
    process = HaproxyProcess(plane.paths)
    old_master = process.master_pid()
    victims = process.processes()
    assert len(victims) >= 2  # master and worker

    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)

    async def restarted() -> bool:
        pid = process.master_pid()
        return plane.restarts >= 1 and pid is not None and pid != old_master

    await async_eventually(restarted, timeout=15, message="watcher restarted haproxy")

    async def serving() -> bool:
        status = {s.name: s.status for s in await plane.servers("web")}
        return status == {"a": "UP", "b": "UP", "c": "MAINT"}

    await async_eventually(serving, timeout=10)
    observed = {s.name: (s.weight, s.state) for s in await plane.servers("web")}
    assert observed["a"] == (30, ServerState.READY)
    assert observed["b"] == (70, ServerState.READY)
    assert observed["c"][1] is ServerState.MAINT
    versions = await asyncio.to_thread(served_versions, port, 200)
    assert abs(100.0 * versions.count("2.0.0") / len(versions) - 70.0) <= 3.0

    await plane.set_state("web", "c", ServerState.READY)  # back from maintenance as well
    await plane.set_weights("web", {"a": 0, "b": 0, "c": 10})
    assert set(await asyncio.to_thread(served_versions, port, 20)) == {"1.0.0"}


async def test_agent_restart_reattaches_without_interrupting_traffic(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    first = await dataplanes()
    port = free_port("127.0.0.2")
    await first.ensure_unit("web", port)
    a = backend("a", "1.0.0", "127.0.0.3")
    b = backend("b", "2.0.0", "127.0.0.4")
    await first.add_server("web", "a", a.addr, a.port, "1.0.0", 50)
    await first.add_server("web", "b", b.addr, b.port, "2.0.0", 50)
    await wait_all_up(first, "web", 2)
    master = HaproxyProcess(first.paths).master_pid()

    with LoadGenerator("127.0.0.2", port, concurrency=8) as load:
        await _wait_count(load, 500)
        await first.close()  # the agent goes away; HAProxy keeps serving
        await _wait_count(load, load.count + 1000)
        second = await dataplanes(data_dir=first.paths.root.parent)
        assert second.attached
        assert HaproxyProcess(second.paths).master_pid() == master
        await second.set_weights("web", {"a": 100, "b": 0})
        switched = time.monotonic()
        await _wait_count(load, load.count + 1000)
        results = load.stop()

    assert failures(results) == []
    after = between(results, switched, time.monotonic())
    assert len(after) >= 1000 and share(after, "2.0.0") == 0.0
    assert second.restarts == 0

    async def logs_flow_to_the_new_agent() -> bool:
        return sum(w.requests for w in second.window("web")) >= 1000

    await async_eventually(logs_flow_to_the_new_agent, timeout=10)


async def test_shutdown_stops_haproxy_and_start_brings_the_units_back(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane: DataPlane = await dataplanes()
    port = free_port("127.0.0.2")
    await plane.ensure_unit("web", port)
    a = backend("a", "1.0.0", "127.0.0.3")
    await plane.add_server("web", "a", a.addr, a.port, "1.0.0", 7)
    await plane.shutdown()
    assert HaproxyProcess(plane.paths).processes() == []

    again = await dataplanes(data_dir=plane.paths.root.parent)
    assert not again.attached
    await wait_all_up(again, "web", 1)
    assert [(s.name, s.weight) for s in await again.servers("web")] == [("a", 7)]
    assert await asyncio.to_thread(served_versions, port, 3) == ["1.0.0"] * 3
