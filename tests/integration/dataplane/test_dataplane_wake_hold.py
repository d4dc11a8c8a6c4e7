"""Requests to a collected unit held by a real HAProxy's Lua while it wakes (issue 17):
answered once a server is usable, 503 with Retry-After past the hold or the queue bound,
and 503 at once for a unit that is not collected. 127.0.0.183-184."""

from __future__ import annotations

import asyncio
import http.client
import time
from dataclasses import replace
from pathlib import Path

from agent.dataplane.wake_hold import WakeListener, write_hold_script
from tests.integration.dataplane.dataplane_fixtures import (
    FAST,
    BackendFactory,
    PlaneFactory,
    free_port,
)

PLANE, APP = "127.0.0.183", "127.0.0.184"
HOLD_S, MAX_HELD = 4.0, 2


def get(port: int) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection(PLANE, port, timeout=15)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        reply.read()
        return (reply.status, {k.lower(): v for k, v in reply.getheaders()},
                time.monotonic() - started)
    finally:
        conn.close()


async def test_held_until_a_server_is_usable_bounded_and_only_for_collected_units(
        tmp_path: Path, dataplanes: PlaneFactory, backend: BackendFactory) -> None:
    asked: list[str] = []

    def decide(backend_name: str) -> bool:
        asked.append(backend_name)
        return backend_name == "be.web"

    listener = WakeListener(PLANE, free_port(PLANE), decide)
    await listener.start()
    try:
        script = tmp_path / "wake_hold.lua"
        write_hold_script(script, PLANE, listener.port, HOLD_S, MAX_HELD)
        plane = await dataplanes(advertise=PLANE,
                                 settings=replace(FAST, hold_script=str(script)))
        web, other = free_port(PLANE), free_port(PLANE)
        await plane.ensure_unit("web", web, "/healthz")
        await plane.ensure_unit("other", other, "/healthz")

        # held while nothing is usable, answered by the server that appears
        held = asyncio.create_task(asyncio.to_thread(get, web))
        await asyncio.sleep(1.0)
        assert not held.done() and "be.web" in asked
        app = backend("w1", "1.0.0", APP)
        await plane.add_server("web", app.name, APP, app.port, "1.0.0", 100)
        status, _, took = await held
        assert status == 200 and took >= 1.0, (status, took)

        # a unit that is not collected: HAProxy's 503 at once, nothing held
        status, _, took = await asyncio.to_thread(get, other)
        assert status == 503 and took < 1.0, (status, took)
        assert "be.other" in asked

        # nothing usable again: two held up to the hold, the third refused at once
        await plane.remove_server("web", app.name)
        answers = await asyncio.gather(*(asyncio.to_thread(get, web) for _ in range(3)))
        answers.sort(key=lambda a: a[2])
        assert [a[0] for a in answers] == [503, 503, 503], answers
        assert all(a[1].get("retry-after") == "5" for a in answers), answers
        assert answers[0][2] < 1.0 <= HOLD_S - 0.5 <= answers[1][2], answers
    finally:
        await listener.close()
