"""The coordinator's metric families from pure inputs, the instruments fed as calls and
etcd requests end, and what counts as an etcd failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from common.errors import Conflict, InvalidArgument, Unavailable
from coordinator.errors import NotLeader
from coordinator.fleet.liveness import HostSeen
from coordinator.metrics import (
    CoordinatorMetrics,
    FleetSnapshot,
    InstanceRow,
    fleet_families,
    rollout_families,
)
from coordinator.rollouts.controls import new_rollout
from coordinator.rollouts.record import Measurement, Phase, StepRecord
from coordinator.rollouts.settings import RolloutSettings, Strategy
from coordinator.state.measured_store import MeasuredStore, is_failure
from coordinator.state.store import Change, Entry

CANARY = RolloutSettings(strategy=Strategy.CANARY, replicas=2, steps=(5, 25, 50, 100))


def samples(families: list[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in families for s in family.samples}


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def canary(rollout_id: str = "r1", unit: str = "web") -> Any:
    return new_rollout(rollout_id, "shop", unit, "b1", "1.0.0", "1.1.0", CANARY, 100.0,
                       new_slot="green", old_instances=("old-0",))


def test_fleet_families_count_hosts_instances_and_report_ages() -> None:
    snap = FleetSnapshot(
        coordinator_id="c1", release="0.2.0", leader=True, now=100.0,
        hosts={"h1": ("b1", "alive"), "h2": ("b1", "suspect"), "h3": ("b2", "alive")},
        connected=frozenset({"h1", "h3"}),
        seen={"h1": HostSeen(97.5, True), "h2": HostSeen(80.0, False, 85.0)},
        instances=(InstanceRow("shop", "web", "1.0.0", "running"),
                   InstanceRow("shop", "web", "1.0.0", "running"),
                   InstanceRow("shop", "web", "1.1.0", "placed")))
    found = samples(fleet_families(snap))
    assert found[key("landlord_coordinator_leader")] == 1.0
    assert found[key("landlord_coordinator_info", coordinator="c1", release="0.2.0")] == 1.0
    assert found[key("landlord_agents_connected")] == 2.0
    assert found[key("landlord_agent_last_report_age_seconds", host="h1")] == 2.5
    assert found[key("landlord_agent_last_report_age_seconds", host="h2")] == 20.0
    assert found[key("landlord_hosts", building="b1", status="alive")] == 1.0
    assert found[key("landlord_hosts", building="b1", status="suspect")] == 1.0
    assert found[key("landlord_hosts", building="b1", status="lost")] == 0.0
    assert found[key("landlord_hosts", building="b2", status="alive")] == 1.0
    assert found[key("landlord_instances", apartment="shop", unit="web", version="1.0.0",
                     state="running")] == 2.0
    assert found[key("landlord_instances", apartment="shop", unit="web", version="1.1.0",
                     state="placed")] == 1.0


def test_a_follower_without_state_says_only_that_it_does_not_lead() -> None:
    found = samples(fleet_families(FleetSnapshot("c2", "", False, 0.0)))
    assert found[key("landlord_coordinator_leader")] == 0.0
    assert found[key("landlord_agents_connected")] == 0.0
    assert not [k for k in found if k[0] in ("landlord_hosts", "landlord_instances")]


def test_rollout_families_give_each_active_rollouts_step_and_target_split() -> None:
    active = replace(canary(), phase=Phase.SWITCHING, step_index=1, new_percent=25.0)
    paused = replace(canary("r2", "api"), phase=Phase.SWITCHING, paused=True)
    done = replace(canary("r0"), phase=Phase.PROMOTED, new_percent=100.0)
    found = samples(rollout_families([active, paused, done]))
    assert found[key("landlord_rollouts", phase="switching")] == 2.0
    assert found[key("landlord_rollouts", phase="promoted")] == 1.0
    assert found[key("landlord_rollouts", phase="rolled_back")] == 0.0
    labels = {"apartment": "shop", "unit": "web", "rollout": "r1", "from_version": "1.0.0",
              "to_version": "1.1.0"}
    assert found[key("landlord_rollout_step", **labels)] == 1.0
    assert found[key("landlord_rollout_paused", **labels)] == 0.0
    weight = "landlord_rollout_target_weight_ratio"
    assert found[key(weight, **labels, version="1.1.0")] == 0.25
    assert found[key(weight, **labels, version="1.0.0")] == 0.75
    assert found[key("landlord_rollout_paused", **{**labels, "unit": "api",
                                                   "rollout": "r2"})] == 1.0
    assert not [k for k in found if dict(k[1]).get("rollout") == "r0"]


def test_rollout_families_show_the_verdicts_and_what_the_analysis_last_measured() -> None:
    passed = StepRecord(0, 5, 100.0, "passed", 160.0,
                        canary=Measurement(requests=300, errors=3, error_rate=0.01,
                                           p95_ms=120.0, throughput_rps=5.0),
                        stable=Measurement(requests=5700, errors=0, error_rate=0.0,
                                           p95_ms=80.0, throughput_rps=95.0))
    current = StepRecord(1, 25, 160.0)
    record = replace(canary(), phase=Phase.SWITCHING, step_index=1, new_percent=25.0,
                     steps=(passed, current))
    found = samples(rollout_families([record]))
    labels = {"apartment": "shop", "unit": "web", "rollout": "r1", "from_version": "1.0.0",
              "to_version": "1.1.0"}
    assert found[key("landlord_rollout_steps", **labels, outcome="passed")] == 1.0
    assert found[key("landlord_rollout_steps", **labels, outcome="active")] == 1.0
    assert found[key("landlord_rollout_steps", **labels, outcome="failed")] == 0.0
    assert found[key("landlord_rollout_analysis_requests_per_second", **labels,
                     side="canary")] == 5.0
    assert found[key("landlord_rollout_analysis_requests_per_second", **labels,
                     side="stable")] == 95.0
    assert found[key("landlord_rollout_analysis_error_ratio", **labels, side="canary")] == 0.01
    assert found[key("landlord_rollout_analysis_latency_p95_seconds", **labels,
                     side="canary")] == 0.12
    unmeasured = samples(rollout_families([replace(record, steps=(current,))]))
    assert not [k for k in unmeasured if k[0].startswith("landlord_rollout_analysis")]


def test_calls_and_etcd_requests_are_counted_as_they_end() -> None:
    metrics = CoordinatorMetrics("c1")
    metrics.observe_call("Deploy", "OK", 0.02)
    metrics.observe_call("Deploy", "PERMISSION_DENIED", 0.001)
    metrics.observe_etcd("commit", 0.004, failed=False)
    metrics.observe_etcd("commit", 2.0, failed=True)
    metrics.observe_etcd("watch", None, failed=True)
    metrics.observe_refusal("memory")
    text = generate_latest(metrics.registry).decode()
    found = {(s.name, frozenset(s.labels.items())): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}
    assert found[key("landlord_admin_calls_total", method="Deploy", code="OK")] == 1.0
    assert found[key("landlord_admin_calls_total", method="Deploy",
                     code="PERMISSION_DENIED")] == 1.0
    assert found[key("landlord_admin_call_duration_seconds_count", method="Deploy")] == 2.0
    assert found[key("landlord_etcd_request_duration_seconds_count", operation="commit")] == 2
    assert found[key("landlord_etcd_request_failures_total", operation="commit")] == 1.0
    assert found[key("landlord_etcd_request_failures_total", operation="watch")] == 1.0
    assert key("landlord_etcd_request_duration_seconds_count", operation="watch") not in found
    assert found[key("landlord_placement_refusals_total", resource="memory")] == 1.0
    assert key("landlord_coordinator_leader") not in found  # fleet figures come with watch()


@pytest.mark.parametrize(("exc", "failed"), [
    (Unavailable("etcd is unreachable"), True),
    (RuntimeError("unexpected"), True),
    (Conflict("a compare lost"), False),
    (NotLeader("deposed"), False),
    (InvalidArgument("too many operations"), False),
])
def test_only_an_etcd_that_cannot_answer_counts_as_failed(exc: Exception, failed: bool) -> None:
    assert is_failure(exc) is failed


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float | None, bool]] = []

    def observe_etcd(self, operation: str, seconds: float | None, failed: bool) -> None:
        self.seen.append((operation, seconds, failed))


class ScriptedStore:
    """get answers, commit loses a compare, the watch breaks after one change."""

    max_txn_ops = 64

    async def get(self, key: str) -> Entry | None:
        return Entry(key, b"v", 1, 1)

    async def commit(self, txn: Any, fence: Any = None) -> int:
        raise Conflict("lost")

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[Change]:
        yield Change("put", Entry(prefix + "a", b"", 1, 1))
        raise Unavailable("etcd went away")

    def compact_hint(self) -> str:
        return "passed through"


async def test_measured_store_times_requests_and_passes_the_rest_through() -> None:
    ticks = iter([10.0, 10.25, 20.0, 20.5])
    recorder = Recorder()
    store = MeasuredStore(ScriptedStore(), recorder, monotonic=lambda: next(ticks))  # type: ignore[arg-type]
    assert store.max_txn_ops == 64
    assert (await store.get("/k")) == Entry("/k", b"v", 1, 1)
    with pytest.raises(Conflict):
        await store.commit(object())  # type: ignore[arg-type]
    changes = []
    with pytest.raises(Unavailable):
        async for change in store.watch("/p/", 1):
            changes.append(change.entry.key)
    assert changes == ["/p/a"]
    assert recorder.seen == [("get", 0.25, False), ("commit", 0.5, False),
                             ("watch", None, True)]
    assert store.compact_hint() == "passed through"
