"""Host liveness: alive, suspect and lost, from silence and closed streams."""

from __future__ import annotations

from coordinator.fleet.liveness import HostSeen, LivenessPolicy, assess, plan_liveness
from coordinator.state.records import HostHealth

POLICY = LivenessPolicy(heartbeat_interval=10, grace=10)


def test_a_reporting_host_is_alive() -> None:
    assert assess(HostSeen(100, True), 110, POLICY) == HostHealth.ALIVE
    assert assess(HostSeen(100, True), 115, POLICY) == HostHealth.ALIVE


def test_silence_on_an_open_stream_makes_it_suspect_then_lost() -> None:
    seen = HostSeen(100, True)
    assert assess(seen, 115.1, POLICY) == HostHealth.SUSPECT
    assert assess(seen, 124.9, POLICY) == HostHealth.SUSPECT
    assert assess(seen, 125, POLICY) == HostHealth.LOST


def test_a_closed_stream_is_suspect_at_once_and_lost_after_the_grace() -> None:
    seen = HostSeen(100, False, disconnected_at=101)
    assert assess(seen, 101, POLICY) == HostHealth.SUSPECT
    assert assess(seen, 110.9, POLICY) == HostHealth.SUSPECT
    assert assess(seen, 111, POLICY) == HostHealth.LOST


def test_a_host_not_yet_reconnected_after_a_takeover_gets_a_heartbeat_and_the_grace() -> None:
    seen = HostSeen(100, False)  # known from etcd, never connected to this leader
    assert assess(seen, 100, POLICY) == HostHealth.SUSPECT
    assert assess(seen, 124, POLICY) == HostHealth.SUSPECT
    assert assess(seen, 125, POLICY) == HostHealth.LOST


def test_plan_reports_only_changes_in_host_order() -> None:
    seen = {"b": HostSeen(100, False, 100), "a": HostSeen(100, True), "c": HostSeen(100, True)}
    current = {"a": HostHealth.ALIVE, "b": HostHealth.SUSPECT, "c": HostHealth.ALIVE}
    changes = plan_liveness(seen, current, 111, POLICY)
    assert [(c.host_id, c.before, c.after) for c in changes] == [
        ("b", HostHealth.SUSPECT, HostHealth.LOST)
    ]
    changes = plan_liveness(seen, current, 116, POLICY)
    assert [c.host_id for c in changes] == ["a", "b", "c"]


def test_mass_silence_in_a_building_declares_no_host_lost() -> None:
    seen = {f"h{i}": HostSeen(100, False, 100) for i in range(3)}
    seen["h3"] = HostSeen(120, True)
    buildings = dict.fromkeys(seen, "b1")
    current = dict.fromkeys(seen, HostHealth.ALIVE)
    # 3 of 4 silent: held as suspect (a network or leader problem, not three dead hosts)
    changes = plan_liveness(seen, current, 120, POLICY, buildings)
    assert {c.host_id: c.after for c in changes} == dict.fromkeys(["h0", "h1", "h2"],
                                                                  HostHealth.SUSPECT)
    # 2 of 4 silent: lost as usual
    seen["h2"] = HostSeen(120, True)
    changes = plan_liveness(seen, current, 120, POLICY, buildings)
    assert {c.host_id: c.after for c in changes} == {"h0": HostHealth.LOST,
                                                     "h1": HostHealth.LOST}
    # hosts lost this term still count, so a creeping outage stops at half the building
    current.update(h0=HostHealth.LOST, h1=HostHealth.LOST)
    seen["h2"] = HostSeen(100, False, 100)
    changes = plan_liveness(seen, current, 120, POLICY, buildings)
    assert [(c.host_id, c.after) for c in changes] == [("h2", HostHealth.SUSPECT)]
    # other buildings are judged on their own
    changes = plan_liveness({"x": HostSeen(100, False, 100), "y": HostSeen(120, True)},
                            {}, 120, POLICY, {"x": "b2", "y": "b2"})
    assert [(c.host_id, c.after) for c in changes] == [("x", HostHealth.LOST)]
