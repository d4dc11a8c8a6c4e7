"""What the leader reads about the fleet: an instance's freshest state (memory first, else
the persisted status), the hosts placement may use, and the windows kept for canaries."""

from __future__ import annotations

from common.resources import Resources
from common.stream_messages import MetricsWindow, ObservedInstance
from coordinator.fleet.known_fleet import KnownFleet
from coordinator.fleet.metrics_windows import MetricsWindows
from coordinator.fleet.sessions import Fleet, HostSession
from coordinator.state.cluster_state import ClusterState, Versioned
from coordinator.state.keys import KeyLayout
from coordinator.state.records import HostHealth, HostRecord, InstanceRecord, StatusRecord, encode
from coordinator.state.store import Change, Entry


def known() -> tuple[KnownFleet, ClusterState, Fleet]:
    state, fleet = ClusterState(KeyLayout()), Fleet()
    record = InstanceRecord("web-1", "shop", "web", "1.0.0", "blue", "h1", 20001,
                            Resources(cpu=1), 1.0)
    state.instances["web-1"] = Versioned(record, 3)
    for host_id in ("h1", "h2", "h3"):
        host = encode(HostRecord(host_id, "b1", "127.0.0.2", Resources(cpu=1)))
        state.apply(Change("put", Entry(KeyLayout().host(host_id), host, 1, 1)))
    return KnownFleet(state, fleet), state, fleet


def test_an_instances_state_comes_from_memory_else_from_its_persisted_status() -> None:
    reads, state, fleet = known()
    assert reads.known_state("web-1") is None
    state.statuses["web-1"] = StatusRecord("web-1", "h1", "running", True, restarts=2)
    persisted = reads.known_state("web-1")
    assert persisted is not None and persisted.routable and persisted.restarts == 2
    fleet.observe(ObservedInstance("web-1", "h1", "shop", "web", "1.0.0", "blue", "stopped",
                                   health_score=0.0, port=20001))
    seen = reads.known_state("web-1")
    assert seen is not None and seen.state == "stopped"


def test_placeable_hosts_are_connected_alive_and_not_lost() -> None:
    reads, _, fleet = known()
    fleet.connect(HostSession("h1", "b1", "a", 0.0), ("demo:1",), (), 0.0)
    fleet.connect(HostSession("h2", "b1", "a", 0.0), (), (), 0.0)
    fleet.health["h2"] = HostHealth.SUSPECT
    assert [h.host_id for h in reads.placeable_hosts("b1")] == ["h1"]
    assert reads.image_kept("b1", "demo:1") and not reads.image_kept("b1", "demo:2")


def test_windows_are_read_per_version_since_a_time_and_the_oldest_dropped() -> None:
    windows = MetricsWindows(retention=2)

    def window(version: str, end: float) -> MetricsWindow:
        return MetricsWindow("shop", "web", version, "i", "h1", end - 1, end, 10, 0)

    windows.record([window("1.0.0", 1.0), window("1.1.0", 2.0), window("1.1.0", 3.0)])
    assert [w.end for w in windows.windows("shop", "web")] == [2.0, 3.0]
    assert [w.end for w in windows.windows("shop", "web", "1.1.0", since=2.0)] == [3.0]
    assert windows.windows("shop", "db") == []
