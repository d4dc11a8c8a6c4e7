"""Request windows (HAProxy's counts, latency from its log) against what the client measured."""

from __future__ import annotations

import json
import time

from agent.dataplane import WindowSnapshot, merge_snapshots
from tests.integration.dataplane.dataplane_fixtures import (
    BackendFactory,
    PlaneFactory,
    free_port,
    wait_all_up,
)
from tests.integration.dataplane.dataplane_load import LoadGenerator
from tests.support import async_eventually

REQUESTS = 3000


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


async def test_windows_match_client_counts_error_rate_and_p95(
    dataplanes: PlaneFactory, backend: BackendFactory
) -> None:
    plane = await dataplanes()
    port = free_port("127.0.0.2")
    await plane.ensure_unit("web", port)
    # every 10th request fails with 500, every 8th takes 40 ms more (p95 lands there)
    flaky = ("--error-every", "10", "--slow-every", "8", "--slow-ms", "40", "--fast-ms", "1")
    for name, addr in (("a", "127.0.0.3"), ("b", "127.0.0.4")):
        item = backend(name, "1.0.0", addr, *flaky)
        await plane.add_server("web", name, addr, item.port, "1.0.0", 100)
    await wait_all_up(plane, "web", 2)
    received_before = plane.log_lines_received

    with LoadGenerator("127.0.0.2", port, concurrency=4) as load:

        async def enough() -> bool:
            return load.count >= REQUESTS

        await async_eventually(enough, timeout=60, interval=0.05)
        results = load.stop()

    assert all(r.status in (200, 500) for r in results)
    client_errors = sum(1 for r in results if r.status == 500)
    client_p95 = _quantile([(r.t1 - r.t0) * 1000.0 for r in results], 0.95)

    async def all_counted() -> bool:
        await plane.counts.read()
        return sum(w.requests for w in plane.window("web", seconds=300)) >= len(results)

    # Counts are HAProxy's own per-server counters: every request, whatever the log lost.
    await async_eventually(all_counted, timeout=10, message="requests all counted")
    windows = plane.window("web", seconds=300)
    merged = merge_snapshots(windows)
    assert merged is not None
    assert (merged.requests, merged.errors) == (len(results), client_errors)
    assert {w.instance for w in windows} == {"a", "b"}
    assert {w.version for w in windows} == {"1.0.0"}
    assert abs(client_errors / len(results) - 0.1) <= 0.01
    # latency from the log lines that arrived (every one is sampled here)
    assert merged.latency.count == plane.log_lines_received - received_before > 0
    # p95: HAProxy's %Ta (request received .. response sent) lies inside the client's
    # own measurement of every request, so it is never above the client's figure (give
    # or take the sketch's 1 %); the slow eighth of the requests puts both at >= 40 ms.
    window_p95 = merged.latency.quantile(0.95)
    assert window_p95 is not None
    assert 40.0 * 0.99 <= window_p95 <= client_p95 * 1.02 + 1.0, (window_p95, client_p95)
    assert window_p95 >= 0.5 * client_p95, (window_p95, client_p95)

    # exported form is JSON-safe and round-trips; last activity is recent
    for window in windows:
        again = WindowSnapshot.from_dict(json.loads(json.dumps(window.to_dict())))
        assert again == window
        assert window.host == "127.0.0.2"
    for name in ("a", "b"):
        last = plane.last_activity("web", name)
        assert last is not None and time.time() - last < 30
    assert plane.last_activity("web") is not None
    assert plane.last_activity("nothing-here") is None
