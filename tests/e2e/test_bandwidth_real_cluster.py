"""A network limit held both ways on a real cluster under load (etcd, a coordinator, two real
agents with Docker, HAProxy and bandwidth enforcement on 127.0.0.201-202), e2e/bw running
two replicas of the demo app (bridged, the default) under ``--network 8Mbit``, e2e/bwfree
one replica without a limit:

- a download (GET /bytes) and an upload (POST /upload) through e2e/bw's entry point each run
  close to 8 Mbit/s, while the same transfers through e2e/bwfree's run far faster;
- meanwhile a client per host entry point keeps calling e2e/bw: no request fails.
The measured rates are printed (pytest -s).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
from local_cluster.images import demo_image
from local_cluster.processes import free_port_on_all

from tests.e2e.real_cluster import host_id
from tests.e2e.real_load import Load, failed, real_cluster_cli, serving
from tests.e2e.test_cli_units import Cli
from tests.support import eventually
from tests.support.transfer_rates import download_rate, upload_rate

HOSTS = {host_id("bw-1"): "127.0.0.201", host_id("bw-2"): "127.0.0.202"}
ADDRESSES = tuple(HOSTS.values())
LIMIT, RATE = "8Mbit", 8_000_000
SIZE = 3 * 1024 * 1024  # about 3 s each way at the limit

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cli() -> Iterator[Cli]:
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster_cli(settings, HOSTS) as (_, found):
        yield found


def deploy(cli: Cli, unit: str, replicas: int, *limit: str) -> int:
    """Publish 1.0.0 of ``unit`` (with ``limit`` flags) and deploy it; its entry port."""
    port = free_port_on_all(list(ADDRESSES))
    cli.json("units", "publish", unit, "1.0.0", "--image", demo_image("1.0.0"), "--port", "0",
             "--service-port", str(port), "--health-path", "/healthz", "--health-interval",
             "1s", "--health-timeout", "1s", "--cpu", "100m", "--memory", "64Mi", *limit)
    done = cli.run("deploy", unit, "1.0.0", "--building", "demo", "--replicas", str(replicas),
                   "--wait", "--output", "json", timeout=120)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr)
    eventually(partial(serving, port, ADDRESSES), timeout=60, interval=0.5,
               message=f"{unit} served on every host")
    return port


def test_a_limit_holds_both_ways_under_load(cli: Cli) -> None:
    port = deploy(cli, "e2e/bw", 2, "--network", LIMIT)
    free_port = deploy(cli, "e2e/bwfree", 1)
    load = Load(port, addresses=ADDRESSES).start(max_seconds=120)
    try:
        start = load.settled(count=20)
        entry = ADDRESSES[0]
        down = download_rate(entry, port, SIZE)
        up = upload_rate(entry, port, SIZE)
        free_down = download_rate(entry, free_port, 8 * SIZE)
        free_up = upload_rate(entry, free_port, 8 * SIZE)
        load.settled(count=20)
        answers = load.since(start)
    finally:
        load.close()
    print(f"\nlimit {LIMIT} through the entry point: download {down / 1e6:.2f}, upload "
          f"{up / 1e6:.2f} Mbit/s; no limit: download {free_down / 1e6:.0f}, upload "
          f"{free_up / 1e6:.0f} Mbit/s; {len(answers)} requests of the load meanwhile, "
          f"{len(failed(answers))} failed (a loaded 2-core machine)")
    assert 0.6 * RATE < down < 1.3 * RATE and 0.6 * RATE < up < 1.3 * RATE
    assert free_down > 5 * RATE and free_up > 5 * RATE
    assert failed(answers) == [], failed(answers)[:5]
