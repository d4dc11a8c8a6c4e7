"""The agent's metrics from pure inputs: which counters an event moves, instance families,
the registry as scraped, and the health verdict."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.agent_health import AgentHealth, HealthFacts, judge
from agent.dataplane.model import DataPlaneSpec, ServerSpec, UnitSpec
from agent.dataplane.server_counters import ServerCount
from agent.instances.events import AgentEvent, EventBus, EventType
from agent.metrics import AgentMetrics, Increment, UsageRow, event_increments, instance_families

Key = tuple[str, frozenset[tuple[str, str]]]


def event(type_: str, /, **details: Any) -> AgentEvent:
    return AgentEvent(type_, "i1", "web", "1.0.0", 100.0, details)


@pytest.mark.parametrize(("published", "moved"), [
    (event(EventType.RECOVERY_ATTEMPT, kind="container_crash", attempt=1),
     [Increment("recoveries", ("container_crash", "attempted"))]),
    (event(EventType.RECOVERY_SUCCESS, kind="memory_leak"),
     [Increment("recoveries", ("memory_leak", "succeeded"))]),
    (event(EventType.RECOVERY_FAILURE, kind="container_crash", final=True),
     [Increment("recoveries", ("container_crash", "failed"))]),
    (event(EventType.CRASHED, oom_killed=True, exit_code=137),
     [Increment("crashes", ("true",))]),
    (event(EventType.ESCALATION, kind="crash_loop"), [Increment("escalations", ("crash_loop",))]),
    (event(EventType.CRASH_DUMP, path="/d"), [Increment("dumps", ("crash",))]),
    (event(EventType.MEMORY_DUMP, path="/d"), [Increment("dumps", ("memory",))]),
    (event(EventType.LIMIT_EXCEEDED, resource="cpu", usage=1.2, limit=1.0),
     [Increment("limit_events", ("cpu", "limit_exceeded"))]),
    (event(EventType.MEMORY_PRESSURE, resource="memory"),
     [Increment("limit_events", ("memory", "memory_pressure"))]),
    (event(EventType.IMAGE_PULL_FAILED, image="x"), [Increment("image_pulls", ("failed",))]),
    (event(EventType.GC_COLLECTED, reason="idle"),
     [Increment("gc_actions", ("unused",)), Increment("gc_instances", ("unused",))]),
    (event(EventType.GC_MEMORY, cache_before=5000, cache_after=1000),
     [Increment("gc_actions", ("memory",)), Increment("gc_bytes", ("memory",), 4000.0)]),
    (event(EventType.GC_MEMORY, cache_before=1000, cache_after=3000),
     [Increment("gc_actions", ("memory",)), Increment("gc_bytes", ("memory",), 0.0)]),
    (event(EventType.GC_CACHE, removed=[{"kind": "image", "ref": "a", "size": 300},
                                        {"kind": "dump", "ref": "b", "size": 20}]),
     [Increment("gc_actions", ("cache",), 2.0), Increment("gc_bytes", ("cache",), 320.0)]),
    (event(EventType.STATE, to="running"), []),
    (event(EventType.HEALTH, healthy=True), []),
])
def test_each_event_moves_its_counters(published: AgentEvent, moved: list[Increment]) -> None:
    assert event_increments(published) == moved


def test_instance_families_fill_every_state_and_scale_usage() -> None:
    rows = [UsageRow("i1", "shop", "web", "1.0.0", "running",
                     {"cpu_usage_ns": 2_500_000_000, "memory_usage": 4096,
                      "memory_limit": None, "pids": 3, "main_rss": 1}),
            UsageRow("i2", "shop", "web", "1.0.0", "stopped", {})]
    found = {(s.name, frozenset(s.labels.items())): s.value
             for family in instance_families(rows) for s in family.samples}
    labels = {"instance_id": "i1", "apartment": "shop", "unit": "web", "version": "1.0.0"}

    def at(name: str, **extra: str) -> float | None:
        return found.get((name, frozenset(extra.items())))

    assert at("landlord_agent_instances", state="running") == 1.0
    assert at("landlord_agent_instances", state="stopped") == 1.0
    assert at("landlord_agent_instances", state="error") == 0.0
    assert at("landlord_instance_cpu_seconds_total", **labels) == 2.5
    assert at("landlord_instance_memory_usage_bytes", **labels) == 4096.0
    assert at("landlord_instance_pids", **labels) == 3.0
    assert at("landlord_instance_memory_limit_bytes", **labels) is None  # unlimited
    assert not [k for k in found if dict(k[1]).get("instance_id") == "i2"]  # never sampled


class Stream:
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.sessions = 2
        self.reports_sent = 40
        self.commands_run = 3
        self.coordinator_id = "c1"
        self.target = "127.0.0.1:7400"


class Counts:
    sample_every = 10
    totals = {("shop.web", "1.0.0"): ServerCount(900, 9),
              ("shop.web", "1.1.0"): ServerCount(100, 5)}
    sampled_lines = 100


class Plane:
    restarts = 1
    log_lines_received = 1234

    def __init__(self, dropped: int | Exception) -> None:
        self.dropped = dropped
        self.counts = Counts()
        self.spec = DataPlaneSpec("127.0.0.2", {"shop.web": UnitSpec("shop.web", 9000, servers=(
            ServerSpec("web-2", "127.0.0.3", 20001, "1.1.0", 30),
            ServerSpec("web-1", "127.0.0.2", 20000, "1.0.0", 70)))})

    async def dropped_logs(self) -> int:
        if isinstance(self.dropped, Exception):
            raise self.dropped
        return self.dropped


def scraped(metrics: AgentMetrics) -> dict[Key, float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


async def test_the_registry_counts_events_and_reads_stream_and_plane_at_scrape() -> None:
    metrics = AgentMetrics()
    bus = EventBus()
    bus.listen(metrics.on_event)
    bus.publish(event(EventType.RECOVERY_SUCCESS, kind="container_crash"))
    bus.publish(event(EventType.GC_MEMORY, cache_before=10, cache_after=4))
    metrics.observe_command("start", True, 1.5)
    metrics.observe_command("start", False, 0.2)
    metrics.count_wake(True, True)
    metrics.count_wake(True, False)
    metrics.count_wake(False, False)
    stream, plane = Stream(), Plane(dropped=7)
    metrics.watch(lambda: [], lambda _: {}, stream=stream, plane=plane)
    await metrics.refresh()
    found = scraped(metrics)
    assert found[key("landlord_agent_recoveries_total", kind="container_crash",
                     outcome="succeeded")] == 1.0
    assert found[key("landlord_agent_gc_freed_bytes_total", kind="memory")] == 6.0
    assert found[key("landlord_agent_wake_asks_total", answer="held")] == 2.0
    assert found[key("landlord_agent_wake_asks_total", answer="not_held")] == 1.0
    assert found[key("landlord_agent_wakes_sent_total")] == 1.0
    assert found[key("landlord_agent_command_duration_seconds_count", kind="start",
                     outcome="succeeded")] == 1.0
    assert found[key("landlord_agent_command_duration_seconds_sum", kind="start",
                     outcome="failed")] == 0.2
    assert found[key("landlord_agent_gc_actions_total", kind="unused")] == 0.0
    # failures not seen yet are there at 0, so increase() counts the first one
    assert found[key("landlord_agent_escalations_total", kind="container_crash")] == 0.0
    assert found[key("landlord_agent_recoveries_total", kind="memory_leak",
                     outcome="failed")] == 0.0
    assert found[key("landlord_agent_container_crashes_total", oom_killed="true")] == 0.0
    assert found[key("landlord_agent_dumps_total", kind="memory")] == 0.0
    assert found[key("landlord_agent_stream_connected")] == 0.0
    assert found[key("landlord_agent_stream_sessions_total")] == 2.0
    assert found[key("landlord_agent_stream_reports_total")] == 40.0
    assert found[key("landlord_agent_commands_total")] == 3.0
    assert found[key("landlord_agent_request_log_lines_total")] == 1234.0
    assert found[key("landlord_agent_haproxy_restarts_total")] == 1.0
    assert found[key("landlord_agent_request_log_dropped_lines_total")] == 7.0
    assert found[key("landlord_agent_requests_total", unit="shop.web", version="1.1.0")] == 100
    assert found[key("landlord_agent_request_errors_total", unit="shop.web",
                     version="1.0.0")] == 9
    assert found[key("landlord_agent_request_log_sampled_lines_total")] == 100
    assert found[key("landlord_agent_request_log_sample_every")] == 10
    # every server of the unit, this host's and the other host's, with its weight
    assert {k: v for k, v in found.items() if k[0] == "landlord_agent_server_weight"} == {
        key("landlord_agent_server_weight", unit="shop.web", version="1.0.0",
            instance_id="web-1"): 70.0,
        key("landlord_agent_server_weight", unit="shop.web", version="1.1.0",
            instance_id="web-2"): 30.0}
    stream.connected.set()
    plane.dropped = ConnectionError("haproxy is gone")
    await metrics.refresh()
    found = scraped(metrics)
    assert found[key("landlord_agent_stream_connected")] == 1.0
    assert key("landlord_agent_request_log_dropped_lines_total") not in found


def test_a_failing_listener_does_not_stop_the_event(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(_: AgentEvent) -> None:
        raise RuntimeError("bug")

    bus.listen(broken)
    bus.listen(lambda e: seen.append(e.type))
    bus.publish(event(EventType.CRASHED))
    assert seen == [EventType.CRASHED]
    assert bus.recent() and "event listener" in caplog.text


def test_health_needs_every_check_that_applies() -> None:
    ok = HealthFacts(docker="", haproxy="", connected=True, coordinator_id="c1",
                     coordinator_address="127.0.0.1:7400")
    assert judge("h1", ok) == (True, {
        "host": "h1", "coordinator": {"connected": True, "id": "c1",
                                      "address": "127.0.0.1:7400"},
        "docker": {"ok": True, "error": ""}, "haproxy": {"ok": True, "error": ""}})
    standalone = HealthFacts(docker="", haproxy=None, connected=None)
    assert judge("h1", standalone) == (True, {"host": "h1", "coordinator": None,
                                              "docker": {"ok": True, "error": ""},
                                              "haproxy": None})
    assert not judge("h1", HealthFacts(docker="", haproxy="", connected=False))[0]
    assert not judge("h1", HealthFacts(docker="docker: refused", haproxy=None,
                                       connected=None))[0]
    assert not judge("h1", HealthFacts(docker="", haproxy="haproxy: gone", connected=True))[0]


class Docker:
    def __init__(self, answer: Mapping[str, Any] | Exception | None) -> None:
        self.answer = answer

    async def info(self) -> Mapping[str, Any]:
        if self.answer is None:
            await asyncio.sleep(10)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer or {}


async def test_health_asks_docker_and_haproxy_live() -> None:
    stream = Stream()
    stream.connected.set()
    healthy, body = await AgentHealth("h1", Docker({"ID": "x"}), stream, Plane(0))()
    assert healthy and body["coordinator"]["id"] == "c1"
    healthy, body = await AgentHealth("h1", Docker(None), None, Plane(OSError("no socket")),
                                      timeout=0.05)()
    assert not healthy
    assert body["docker"] == {"ok": False, "error": "docker did not answer within 0.05 s"}
    assert body["haproxy"] == {"ok": False, "error": "haproxy: no socket"}
    assert body["coordinator"] is None
