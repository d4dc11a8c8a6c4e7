"""Sticky canaries on a real two-host cluster under load.

etcd, a coordinator and two `landlord-agent`s (Docker + HAProxy on 127.0.0.143-144) run as
processes; every version runs the demo app image 1.0.0 with its own ``VERSION``.
e2e/sbsticky runs 1.0.0 on both hosts; a sticky canary to 1.1.0 walks 5, 25, 50, 100 %.
Cookie-keeping clients (each its own jar, alternating entry hosts, a few requests a second
as a browser makes) start before the rollout and at every step; none of them changes
version while the steps run (those on 1.0.0 stay there at the 100 % step too), while
cookie-less clients see each step's split. The rollout is paused at 100 % and rolled back:
the clients holding a 1.1.0 cookie are then answered by 1.0.0, and no client saw a failed
request. Turning stickiness on and off is a runtime map edit on the hosts, not a reload.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from local_cluster.load import failed
from local_cluster.processes import free_port_on_all

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster, host_id
from tests.e2e.real_load import Load, publish
from tests.e2e.two_host_rollouts import (
    APARTMENT,
    alive_cluster,
    canary,
    rollout,
    run_first,
    spec,
)
from tests.support import eventually

HOSTS = {host_id("st1"): "127.0.0.143", host_id("st2"): "127.0.0.144"}
STICKY = "sbsticky"
STEPS = (5, 25, 50, 100)
APPLIED_WITHIN = 2.0
"""Seconds the hosts may take, after a rollout has ended, to apply its last route."""
PACE = 0.1
"""Seconds between a sticky client's requests: every client hammering a CPU-limited (100m)
stable version, which at the 100 % step serves only its sticky clients, saturates it until
its health checks fail."""
pytestmark = pytest.mark.timeout(240)


def target_percent(info: Any, version: str) -> float:
    return next((float(t.target_percent) for t in info.split
                 if t.version == version and not t.host_id), 0.0)


@dataclass
class Seen:
    at: float
    """When the answer came (monotonic)."""
    status: int
    version: str
    sent: float


@dataclass
class StickyClient:
    """One client with a cookie jar of its own: it sends back the cookie it was given,
    alternating between the entry points of every host."""

    port: int
    addresses: list[str]
    seen: list[Seen] = field(default_factory=list)
    cookie: str = ""
    first_cookie: str = ""
    stuck_at: float = float("inf")
    """When the first cookie came (stickiness is on only while a rollout's steps run)."""

    def run(self, stop: threading.Event) -> None:
        turn = 0
        while not stop.is_set():
            address = self.addresses[turn % len(self.addresses)]
            turn += 1
            self.seen.append(self._ask(address))
            stop.wait(PACE)

    def _ask(self, address: str) -> Seen:
        conn = http.client.HTTPConnection(address, self.port, timeout=10)
        sent = time.monotonic()
        try:
            conn.request("GET", "/", headers={"Cookie": self.cookie} if self.cookie else {})
            reply = conn.getresponse()
            body = reply.read()
            given = reply.getheader("Set-Cookie", "")
            if given:
                self.cookie = given.split(";")[0]
                if not self.first_cookie:
                    self.first_cookie, self.stuck_at = self.cookie, time.monotonic()
            try:
                version = str(json.loads(body).get("version", ""))
            except ValueError:
                version = ""
            return Seen(time.monotonic(), reply.status, version, sent)
        except (OSError, http.client.HTTPException):
            return Seen(time.monotonic(), 0, "", sent)
        finally:
            conn.close()

    def versions(self, until: float) -> set[str]:
        """Versions that answered from the first cookie on, until ``until``."""
        return {s.version for s in self.seen
                if self.stuck_at <= s.at <= until and s.status == 200}


class StickyClients:
    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[StickyClient] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            client = StickyClient(self.port, list(HOSTS.values()))
            thread = threading.Thread(target=client.run, args=(self.stop,), daemon=True)
            thread.start()
            self.clients.append(client)
            self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RealCluster]:
    with alive_cluster(HOSTS) as real:
        yield real


def _port() -> int:
    return free_port_on_all(list(HOSTS.values()))


def test_a_sticky_client_keeps_its_version_through_a_canary_and_after_rollback(
        cluster: RealCluster) -> None:
    port = _port()
    with cluster.admin() as admin:
        for version in ("1.0.0", "1.1.0"):
            publish(admin, spec(STICKY, version, port), version,
                    types_pb2.ChangeSet(features=[version]))
        run_first(admin, STICKY, "1.0.0", port, HOSTS)
        load = Load(port, addresses=HOSTS.values()).start(max_seconds=150)
        sticky = StickyClients(port)
        try:
            _walk_and_roll_back(admin, load, sticky)
        finally:
            sticky.close()
            load.close()
        request = admin_pb2.GetUnitRequest(apartment=APARTMENT, unit=STICKY)
        assert admin.GetUnit(request, timeout=5).unit.sticky  # kept as the unit's default


def _walk_and_roll_back(admin: Any, load: Load, sticky: StickyClients) -> None:
    began = load.settled(40)
    sticky.start(4)  # before the rollout; their cookie comes with the first step
    admin.Deploy(canary(STICKY, "1.1.0", STEPS, sticky=True, monitor=4.0), timeout=30)
    windows: dict[int, tuple[float, float]] = {}
    for percent in STEPS:
        def reached(p: int = percent) -> bool:
            return target_percent(rollout(admin, STICKY), "1.1.0") >= p

        eventually(reached, timeout=60, interval=0.1, message=f"the {percent} % step")
        if percent == 100:  # hold the last step: it is rolled back, not promoted
            admin.ControlRollout(admin_pb2.ControlRolloutRequest(
                apartment=APARTMENT, unit=STICKY, action=admin_pb2.ROLLOUT_CONTROL_PAUSE),
                timeout=10)
        time.sleep(0.7)  # every host has the step's weights
        step_began = time.monotonic()
        sticky.start(4)
        time.sleep(2.5)
        windows[percent] = (step_began, time.monotonic())
    steps_ended = time.monotonic()
    admin.Rollback(admin_pb2.RollbackRequest(apartment=APARTMENT, unit=STICKY), timeout=30)
    # an active rollout's rollback is an abort: traffic back, canary removed, "aborted"
    eventually(lambda: rollout(admin, STICKY).phase == "aborted", timeout=60,
               interval=0.3, message="the canary is rolled back")
    rolled_back = time.monotonic()
    applied = rolled_back + APPLIED_WITHIN
    time.sleep(APPLIED_WITHIN)

    def answered_since_applied() -> bool:
        waiting = [c.seen[-1:] for c in sticky.clients
                   if sum(s.sent >= applied for s in c.seen) < 3]
        assert not waiting, waiting
        return True

    eventually(answered_since_applied, timeout=30, interval=0.2,
               message="three answers to every sticky client after the rollback")

    # cookie-less clients saw each step's split
    shares = {}
    for percent, (start, end) in windows.items():
        answers = [a for a in load.answers(start, end) if a.ok]
        shares[percent] = 100 * sum(a.version == "1.1.0" for a in answers) / len(answers)
        assert abs(shares[percent] - percent) <= 15, (percent, shares[percent], len(answers))
    print("cookie-less share of 1.1.0 by step:", {p: round(s, 1) for p, s in shares.items()})
    # no sticky client changed version while the steps ran (those on 1.0.0 kept it
    # through the 100 % step)
    for client in sticky.clients:
        versions = client.versions(steps_ended)
        assert len(versions) == 1, (client.first_cookie, versions)
    stayed = [c for c in sticky.clients if c.versions(steps_ended) == {"1.0.0"}]
    assert stayed and all(any(windows[100][0] <= s.at for s in c.seen) for c in stayed)
    kept = [c for c in sticky.clients if c.versions(steps_ended) == {"1.1.0"}]
    assert kept, "no sticky client landed on the canary"
    # after the rollback, a client still sending its 1.1.0 cookie is answered by 1.0.0 (the
    # rollout ends once its commands are sent; the hosts apply them a moment later)
    last_canary = max((s.sent for c in kept for s in c.seen if s.version == "1.1.0"),
                      default=rolled_back)
    print(f"last 1.1.0 answer to a canary cookie: {last_canary - rolled_back:+.2f} s after "
          "the rollout ended (a loaded 2-core machine)")
    for client in kept:
        assert client.cookie.endswith("=1.1.0"), client.cookie
        late = [s for s in client.seen if s.sent >= applied]
        assert late and all(s.status == 200 and s.version == "1.0.0" for s in late), late[:3]
    problems = [s for c in sticky.clients for s in c.seen if s.status != 200]
    answers = load.answers(began)
    assert not problems and not failed(answers), (
        problems[:5], failed(answers)[:5], f"steps ended {steps_ended}, rollout ended "
        f"{rolled_back}, 100 % step from {windows[100][0]}")
    slowest = max((s for c in sticky.clients for s in c.seen), key=lambda s: s.at - s.sent)
    print(f"sticky clients: {len(kept)} on 1.1.0, {len(stayed)} on 1.0.0, "
          f"{sum(len(c.seen) for c in sticky.clients)} answers (slowest "
          f"{slowest.at - slowest.sent:.2f} s, sent {slowest.sent - rolled_back:+.2f} s from "
          f"the rollout's end, by {slowest.version}); cookie-less: {len(answers)}; 0 failed")
