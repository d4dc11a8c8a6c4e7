"""Traffic through a real HAProxy: weighted splits, drains, reloads, pinning, stickiness."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import time

from agent.dataplane import DataPlane, ServerState
from common.weights import split_weights
from tests.integration.dataplane.dataplane_fixtures import (
    Backend,
    BackendFactory,
    PlaneFactory,
    free_port,
    wait_all_up,
)
from tests.integration.dataplane.dataplane_load import LoadGenerator, between, failures, share
from tests.support import async_eventually

STABLE, CANARY = "1.0.0", "1.1.0"
STEP_REQUESTS = 2000


def get(
    port: int, headers: dict[str, str] | None = None, addr: str = "127.0.0.2"
) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection(addr, port, timeout=5)
    try:
        conn.request("GET", "/", headers=headers or {})
        response = conn.getresponse()
        response.read()
        return (
            response.status,
            response.getheader("X-Served-Version", ""),
            {k.lower(): v for k, v in response.getheaders()},
        )
    finally:
        conn.close()


async def _unit_with_two_versions(
    plane: DataPlane, backend: object, port: int, *, sticky: bool = False
) -> dict[str, list[str]]:
    assert callable(backend)
    await plane.ensure_unit("web", port, "/healthz", sticky=sticky)
    servers: dict[str, list[str]] = {STABLE: [], CANARY: []}
    for index, addr in enumerate(("127.0.0.3", "127.0.0.4")):
        for version in (STABLE, CANARY):
            item: Backend = backend(f"{version}-{index}", version, addr)
            weight = 128 if version == STABLE else 0
            await plane.add_server("web", item.name, addr, item.port, version, weight)
            servers[version].append(item.name)
    await wait_all_up(plane, "web", 4)
    return servers


async def _until(condition: object, timeout: float = 30.0) -> None:
    assert callable(condition)

    async def check() -> bool:
        return bool(condition())

    await async_eventually(check, timeout=timeout, interval=0.02)


async def test_split_steps_drain_and_reload_under_load_lose_nothing(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    servers = await _unit_with_two_versions(plane, backend, port)
    steps: list[tuple[int, float, float]] = []
    with LoadGenerator("127.0.0.2", port, concurrency=8) as load:
        await _until(lambda: load.count > 200)
        for percent in (0, 5, 25, 50, 100, 0):
            weights = split_weights({STABLE: 100 - percent, CANARY: percent}, servers)
            await plane.set_weights("web", weights)
            applied, before = time.monotonic(), load.count
            await _until(lambda before=before: load.count >= before + STEP_REQUESTS + 200)
            steps.append((percent, applied, time.monotonic()))
            if percent == 25:  # a new unit means a reload: it must be hitless
                await plane.ensure_unit("other", free_port("127.0.0.2"))
            if percent == 100:  # and so does removing one
                await plane.remove_unit("other")
        # take one instance of each version out while traffic flows
        await plane.set_weights("web", split_weights({STABLE: 50, CANARY: 50}, servers))
        for name in (servers[STABLE][1], servers[CANARY][1]):
            result = await plane.drain_and_remove("web", name, timeout=10)
            assert result.drained
        after_drains = load.count
        await _until(lambda: load.count >= after_drains + 500)
        results = load.stop()

    assert failures(results) == []
    for percent, start, end in steps:
        window = between(results, start, end)
        assert len(window) >= STEP_REQUESTS
        assert abs(share(window, CANARY) - percent) <= 3.0, (percent, share(window, CANARY))
    remaining = {s.name for s in await plane.servers("web")}
    assert remaining == {servers[STABLE][0], servers[CANARY][0]}
    assert "other" not in plane.spec.units
    assert (await plane._master.show_proc()).reloads >= 3  # first unit, other, other gone


async def test_version_header_pins_requests_whatever_the_weights(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    await _unit_with_two_versions(plane, backend, port)  # all weight on STABLE

    pinned = [await asyncio.to_thread(get, port, {"X-Landlord-Version": CANARY}) for _ in range(20)]
    plain = [await asyncio.to_thread(get, port) for _ in range(20)]
    unknown = [
        await asyncio.to_thread(get, port, {"X-Landlord-Version": "9.9.9"}) for _ in range(5)
    ]

    assert {(status, version) for status, version, _ in pinned} == {(200, CANARY)}
    assert {version for _, version, _ in plain} == {STABLE}
    assert {version for _, version, _ in unknown} == {STABLE}  # unknown version: weighted path
    await async_eventually(
        lambda: _has_canary_logs(plane), message="pinned requests show up in the canary window"
    )
    canary_windows = plane.window("web", version=CANARY)
    assert {w.instance for w in canary_windows} <= {f"{CANARY}-0", f"{CANARY}-1"}


async def _has_canary_logs(plane: DataPlane) -> bool:
    return sum(w.requests for w in plane.window("web", version=CANARY)) >= 20


async def test_stickiness_keeps_a_client_on_one_version_while_it_has_a_ready_server(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    servers = await _unit_with_two_versions(plane, backend, port, sticky=True)
    await plane.set_weights("web", split_weights({STABLE: 50, CANARY: 50}, servers))

    status, first, headers = await asyncio.to_thread(get, port)
    cookie = headers["set-cookie"].split(";")[0]
    assert status == 200 and cookie == f"LLV_web={first}"
    seen = {(await asyncio.to_thread(get, port, {"Cookie": cookie}))[1] for _ in range(30)}
    assert seen == {first}

    # weight 0 (a canary's stable at its 100 % step) keeps the client where it was
    other = CANARY if first == STABLE else STABLE
    await plane.set_weights("web", split_weights({first: 0, other: 100}, servers))
    seen = {(await asyncio.to_thread(get, port, {"Cookie": cookie}))[1] for _ in range(10)}
    assert seen == {first}
    # drained (or removed) servers do not: the cookie falls back to the weights
    for name in servers[first]:
        await plane.set_state("web", name, ServerState.DRAIN)
    status, moved, headers = await asyncio.to_thread(get, port, {"Cookie": cookie})
    assert (status, moved) == (200, other)
    assert headers["set-cookie"].startswith(f"LLV_web={other}")
    for name in servers[first]:
        await plane.set_state("web", name, ServerState.READY)
    # a header pin wins over the cookie and does not re-stick the client
    status, version, headers = await asyncio.to_thread(
        get, port, {"Cookie": f"LLV_web={other}", "X-Landlord-Version": first}
    )
    assert (status, version) == (200, first) and "set-cookie" not in headers
    # stickiness off and on again is a map edit, not a reload: off, the cookie is ignored
    # and none is issued
    reloads = (await plane._master.show_proc()).reloads
    await plane.ensure_unit("web", port, "/healthz", sticky=False)
    answers = [await asyncio.to_thread(get, port, {"Cookie": cookie}) for _ in range(20)]
    assert {a[1] for a in answers} == {other}  # the weights: 0 / 100
    assert not any("set-cookie" in a[2] for a in answers)
    await plane.ensure_unit("web", port, "/healthz", sticky=True)
    assert (await asyncio.to_thread(get, port, {"Cookie": cookie}))[1] == first
    assert (await plane._master.show_proc()).reloads == reloads


async def test_state_changes_and_new_versions_need_no_reload(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    servers = await _unit_with_two_versions(plane, backend, port)
    reloads_before = (await plane._master.show_proc()).reloads

    extra = backend("2.0.0-0", "2.0.0", "127.0.0.3")
    await plane.add_server("web", extra.name, extra.addr, extra.port, "2.0.0", 0)
    await plane.set_state("web", servers[STABLE][0], ServerState.MAINT)
    await plane.set_weights("web", {servers[STABLE][1]: 10, extra.name: 10})

    observed = {s.name: s for s in await plane.servers("web")}
    assert observed[servers[STABLE][0]].state is ServerState.MAINT
    assert observed[extra.name].weight == 10 and observed[servers[STABLE][1]].weight == 10
    assert (await plane._master.show_proc()).reloads == reloads_before
    versions = {(await asyncio.to_thread(get, port))[1] for _ in range(20)}
    assert versions == {STABLE, "2.0.0"}
    status, pinned, _ = await asyncio.to_thread(get, port, {"X-Landlord-Version": "2.0.0"})
    assert (status, pinned) == (200, "2.0.0")


async def test_a_removed_unit_stops_listening_and_can_come_back(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    item = backend("api-0", "1.0.0", "127.0.0.3")
    await plane.ensure_unit("api", port)
    await plane.add_server("api", item.name, item.addr, item.port, "1.0.0", 10)
    assert (await asyncio.to_thread(get, port))[:2] == (200, "1.0.0")

    await plane.remove_unit("api")
    assert "api" not in plane.spec.units
    assert not plane.paths.map_file("api", "pin").exists()

    async def refused() -> bool:
        try:
            await asyncio.to_thread(get, port)
        except ConnectionRefusedError:
            return True
        return False

    await async_eventually(refused, timeout=10, message="old port closed")
    await plane.ensure_unit("api", port)
    await plane.add_server("api", item.name, item.addr, item.port, "1.0.0", 10)
    await wait_all_up(plane, "api", 1)
    assert (await asyncio.to_thread(get, port))[:2] == (200, "1.0.0")
    assert plane.paths.map_file("api", "version").read_text() == "api-0 1.0.0\n"


async def test_drain_waits_for_requests_in_flight_and_cuts_them_after_the_timeout(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    await plane.ensure_unit("web", port)
    slow = backend("slow", "1.0.0", "127.0.0.3", "--fast-ms", "1500")  # every request 1.5 s
    other = backend("other", "1.0.0", "127.0.0.4")
    await plane.add_server("web", "slow", slow.addr, slow.port, "1.0.0", 100)
    await plane.add_server("web", "other", other.addr, other.port, "1.0.0", 0)
    await wait_all_up(plane, "web", 2)

    async def in_flight_on_slow() -> bool:
        return any(s.name == "slow" and s.sessions >= 1 for s in await plane.servers("web"))

    request = asyncio.create_task(asyncio.to_thread(get, port))
    await async_eventually(in_flight_on_slow, timeout=5)
    await plane.set_weights("web", {"other": 100})
    result = await plane.drain_and_remove("web", "slow", timeout=30)
    assert result.drained
    assert (await request)[:2] == (200, "1.0.0")  # the drain let it finish
    assert [s.name for s in await plane.servers("web")] == ["other"]

    # the same again, but the drain gives up before the request is done
    await plane.add_server("web", "slow", slow.addr, slow.port, "1.0.0", 100)
    await plane.set_weights("web", {"other": 0})
    await wait_all_up(plane, "web", 2)
    cut = asyncio.create_task(asyncio.to_thread(get, port))
    await async_eventually(in_flight_on_slow, timeout=5)
    await plane.set_weights("web", {"other": 100})
    result = await plane.drain_and_remove("web", "slow", timeout=0.1)
    assert not result.drained
    assert [s.name for s in await plane.servers("web")] == ["other"]
    with contextlib.suppress(OSError, http.client.HTTPException):
        await cut  # cut off by the removal; how the client sees that is HAProxy's business
