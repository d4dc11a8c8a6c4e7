"""A blue-green deploy with a gradual switch on a real cluster under load.

etcd, a coordinator, two real agents (Docker + HAProxy on 127.0.0.171-172) and a client per
host entry point. e2e/gradual 1.0.0 runs two replicas; `landlord deploy ... --switch gradual
--gradual-steps 4 --gradual-step-delay 3s` moves it to 1.1.0 in four equal steps (25, 50,
75, 100 %). The rollout record gives each step's start and end (wall clock, the load's clock
too): over each step's window, past a short margin for every HAProxy to apply the new
weights, the share of answers from 1.1.0 on each entry point must be within TOLERANCE
points of the step's target, and no request may fail from the first answer to the last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from local_cluster.images import demo_image
from local_cluster.load import Answer, LoadGenerator, failed
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import real_cluster_cli, serving
from tests.e2e.test_cli_units import Cli
from tests.support import eventually

HOSTS = {host_id("rb-g1"): "127.0.0.171", host_id("rb-g2"): "127.0.0.172"}
APARTMENT, UNIT = "e2e", "gradual"
BLUE, GREEN = "1.0.0", "1.1.0"
STEPS = (25, 50, 75, 100)
STEP_DELAY = 3.0
APPLY_MARGIN = 0.8
"""Seconds after a step starts before its answers are counted (routes reach every host)."""
TOLERANCE = 5.0  # points of share

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def ready() -> Iterator[tuple[RealCluster, Cli]]:
    settings = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}
    with real_cluster_cli(settings, HOSTS) as found:
        yield found


def _share(answers: list[Answer]) -> float:
    return 100.0 * sum(a.version == GREEN for a in answers) / len(answers)


def test_gradual_switch_follows_each_step_with_no_failed_request(
        ready: tuple[RealCluster, Cli]) -> None:
    cluster, cli = ready
    unit = f"{APARTMENT}/{UNIT}"
    port = free_port_on_all(list(HOSTS.values()))
    for version in (BLUE, GREEN):
        cli.json("units", "publish", unit, version, "--image", demo_image(version),
                 "--port", "0", "--service-port", str(port), "--health-path", "/healthz",
                 "--health-interval", "1s", "--health-timeout", "1s", "--cpu", "100m",
                 "--memory", "64Mi")
    first = cli.run("deploy", unit, BLUE, "--building", "demo", "--replicas", "2", "--wait",
                    "--output", "json", timeout=120)
    assert first.returncode == 0, (first.stdout[-2000:], first.stderr)
    eventually(lambda: serving(port, HOSTS.values()), timeout=60, interval=0.5,
               message="every entry point serves")

    load = LoadGenerator(list(HOSTS.values()), port).start(max_seconds=150)  # wall clock
    try:
        began = time.time()
        deployed = cli.run("deploy", unit, GREEN, "--replicas", "2", "--switch", "gradual",
                           "--gradual-steps", str(len(STEPS)), "--gradual-step-delay",
                           f"{STEP_DELAY:g}s", "--warmup", "1s", "--cleanup-delay", "1s",
                           "--wait", "--output", "json", timeout=150)
        assert deployed.returncode == 0, (deployed.stdout[-2000:], deployed.stderr)
        time.sleep(1.0)  # answers after the last step
        ended = time.time()
    finally:
        load.close()
    answers = load.answers(began, ended)
    assert answers and not failed(answers), failed(answers)[:10]

    with cluster.admin() as admin:
        info = admin.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=UNIT),
                                timeout=10)
    assert info.to_version == GREEN and info.phase == "promoted", (info.to_version, info.phase)
    steps = [s for s in info.steps]
    assert [round(s.target_percent) for s in steps] == list(STEPS), info.steps
    shares: dict[int, dict[str, float]] = {}
    starts = [s.started_at.ToNanoseconds() / 1e9 for s in steps]
    print("steps start at (s after the deploy):", [round(t - began, 2) for t in starts])
    for index, step in enumerate(steps):
        # a step's weights hold until the next step starts (its delay included)
        start = starts[index] + APPLY_MARGIN
        end = starts[index + 1] if index + 1 < len(steps) else ended
        assert index + 1 == len(steps) or end - starts[index] >= STEP_DELAY - 0.1, starts
        target = step.target_percent
        shares[round(target)] = found = {}
        for address in HOSTS.values():
            window = [a for a in load.answers(start, end)
                      if a.host == address and start <= a.sent]
            assert len(window) >= 10, (target, address, len(window), end - start)
            found[address] = share = round(_share(window), 1)
            assert abs(share - target) <= TOLERANCE, (
                f"step {target:g} %: {share:.1f} % of {len(window)} answers on {address} "
                f"came from {GREEN}; all shares so far {shares}")
    print(f"gradual switch: {len(answers)} requests, 0 failed; green share per step and "
          f"entry point: {shares}")
