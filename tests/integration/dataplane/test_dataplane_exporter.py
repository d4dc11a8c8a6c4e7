"""HAProxy's own Prometheus exporter on the data plane: the weight of each server as the
data plane set it, at /metrics on the loopback address the agent configured."""

from __future__ import annotations

import dataclasses

from tests.integration.dataplane.dataplane_fixtures import (
    FAST,
    BackendFactory,
    PlaneFactory,
    free_port,
    wait_all_up,
)
from tests.support import async_eventually
from tests.support.prometheus import Scrape, scrape


async def test_haproxy_exports_server_weights(dataplanes: PlaneFactory,
                                              backend: BackendFactory) -> None:
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    plane = await dataplanes(settings=dataclasses.replace(FAST, metrics_listen=listen))
    await plane.ensure_unit("web", free_port("127.0.0.2"))
    for name, addr, weight in (("a", "127.0.0.3", 75), ("b", "127.0.0.4", 25)):
        item = backend(name, "1.0.0", addr)
        await plane.add_server("web", name, addr, item.port, "1.0.0", weight)
    await wait_all_up(plane, "web", 2)

    async def weighted() -> Scrape | None:
        found = await scrape(f"http://{listen}/metrics")
        weights = {dict(labels)["server"]: value for labels, value in
                   found.matching("haproxy_server_weight", proxy="be.web").items()}
        return found if weights == {"a": 75.0, "b": 25.0} else None

    metrics = await async_eventually(weighted, timeout=10, interval=0.2)
    assert metrics is not None
    assert "haproxy_process_nbthread" in metrics.names()
