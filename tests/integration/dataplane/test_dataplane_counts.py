"""Exact request and error counts from HAProxy's counters while the log is sampled."""

from __future__ import annotations

import dataclasses

from agent.dataplane import merge_snapshots
from tests.integration.dataplane.dataplane_fixtures import (
    FAST,
    BackendFactory,
    PlaneFactory,
    free_port,
    wait_all_up,
)
from tests.integration.dataplane.dataplane_load import LoadGenerator, Result
from tests.support import async_eventually

ENTRY = "127.0.0.211"
SAMPLE_EVERY = 10


async def _load(port: int, requests: int, headers: dict[str, str] | None = None
                ) -> list[Result]:
    with LoadGenerator(ENTRY, port, concurrency=4, headers=headers) as load:

        async def enough() -> bool:
            return load.count >= requests

        await async_eventually(enough, timeout=60, interval=0.05)
        return load.stop()


async def test_counts_are_exact_across_backends_and_a_reload_while_lines_are_sampled(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    settings = dataclasses.replace(FAST, log_sample_every=SAMPLE_EVERY)
    plane = await dataplanes(advertise=ENTRY, settings=settings)
    port = free_port(ENTRY)
    await plane.ensure_unit("web", port)
    stable = backend("a", "1.0.0", "127.0.0.212", "--error-every", "10")
    canary = backend("b", "1.1.0", "127.0.0.213", "--error-every", "5")
    await plane.add_server("web", "a", stable.addr, stable.port, "1.0.0", 100)
    await plane.add_server("web", "b", canary.addr, canary.port, "1.1.0", 0)
    await wait_all_up(plane, "web", 2)
    received_before = plane.log_lines_received

    # the weighted backend (all to a), then the pin backend (header: all to b), with a
    # reload (a new worker, counters from zero) between the two
    weighted = await _load(port, 1500)
    await plane.ensure_unit("web", port, retry_after_s=5)  # a new frontend: a reload
    pinned = await _load(port, 1000, {"X-Landlord-Version": "1.1.0"})
    results = weighted + pinned
    assert all(r.status in (200, 500) for r in results)
    expected = {
        "1.0.0": (len(weighted), sum(r.status == 500 for r in weighted)),
        "1.1.0": (len(pinned), sum(r.status == 500 for r in pinned)),
    }

    def counted() -> dict[str, tuple[int, int]]:
        found = {}
        for version in ("1.0.0", "1.1.0"):
            merged = merge_snapshots(plane.window("web", version=version, seconds=300))
            found[version] = (merged.requests, merged.errors) if merged else (0, 0)
        return found

    async def all_counted() -> bool:
        await plane.counts.read()
        return counted() == expected

    await async_eventually(all_counted, timeout=10, message=f"counts {expected}")
    assert plane.counts.totals.keys() == {("web", "1.0.0"), ("web", "1.1.0")}
    assert {v: (c.requests, c.errors) for (_, v), c in plane.counts.totals.items()} == expected

    # latency comes from about one line in SAMPLE_EVERY; every window says so
    windows = plane.window("web", seconds=300)
    assert {w.sample_every for w in windows} == {SAMPLE_EVERY}
    lines = plane.log_lines_received - received_before
    picked = len(results) / SAMPLE_EVERY
    assert 0.5 * picked <= lines <= 1.5 * picked, (lines, picked)
    assert sum(w.latency.count for w in windows) == lines
    assert plane.counts.sampled_lines == len(results) // SAMPLE_EVERY
