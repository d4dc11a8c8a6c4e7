"""One wire contract: every stream message survives to_pb/from_pb unchanged, and every
enum maps by name (no positional tables) in both directions."""

from __future__ import annotations

import dataclasses

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.gc_kinds import GcKind
from common.gen.landlord.v1 import agent_pb2, types_pb2
from common.latency import LatencySketch
from common.lifecycle import InstanceState
from common.proto_values import (
    duration_from_pb,
    duration_to_pb,
    slot_from_pb,
    slot_to_pb,
    state_from_pb,
    state_mode_from_pb,
    state_mode_to_pb,
    state_to_pb,
    timestamp_from_pb,
    timestamp_to_pb,
)
from common.resources import Resources
from common.stream_commands import (
    COMMAND_KINDS,
    AgentCommand,
    CollectGarbage,
    Command,
    DrainInstance,
    PauseInstance,
    ResumeInstance,
    RunCheck,
    SetRoute,
    SetWeights,
    StartInstance,
    StopInstance,
)
from common.stream_convert import (
    command_from_pb,
    command_to_pb,
    health_from_pb,
    observed_from_pb,
    observed_to_pb,
    registration_from_pb,
    registration_to_pb,
    report_from_pb,
    report_to_pb,
)
from common.stream_messages import (
    AgentReport,
    CommandResult,
    MetricsWindow,
    ObservedInstance,
    Registration,
    ReportedEvent,
    RouteServer,
)
from common.unit_spec import HealthCheck

COMMANDS: list[AgentCommand] = [
    StartInstance("i1", "shop", "web", "1.2.0", "green", "shop/web:1.2.0", 20001,
                  ("serve",), {"A": "1"}, HealthCheck("/ready", ("true",), 2.0, 0.5, 4), 2,
                  1.5, Resources(cpu=0.25, memory=64 << 20, storage=1 << 30, network=8),
                  18080, "snapshot", 600.0, "i0", {"S": "s3cret"}, network_mode="bridge"),
    StartInstance("i2", "shop", "web", "1.2.0", "blue", "shop/web:1.2.0", 20002),
    StopInstance("i1", 12.5, drain=False),
    StopInstance("i1", 12.5, drain=True, collect=True),
    SetRoute("shop", "web", 18080, "/healthz",
             (RouteServer("i1", "1.2.0", "127.0.0.2", 20001, 10, "ready"),)),
    SetRoute("shop", "web", 18080, "/healthz", (), ("1.2.0", "1.1.0")),
    SetRoute("shop", "web", 18080, "/healthz", (), (), sticky=True),
    SetRoute("shop", "web", 18080, "/healthz", (), (), wake_on_request=True),
    SetWeights("shop", "web", {"i1": 90, "i2": 10}),
    DrainInstance("shop", "web", "i1", 5.0),
    CollectGarbage((GcKind.UNUSED, GcKind.CACHE)),
    CollectGarbage(),
    RunCheck("i1", ("sh", "-c", "true"), 3.0),
    PauseInstance("i1", 2.5),
    PauseInstance("i1"),
    ResumeInstance("i1"),
    SetRoute("shop", "web", 18080, "/healthz", (), (), retry_after_s=5),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_crosses_the_wire_unchanged(command: AgentCommand) -> None:
    message = Command("c-1", command)
    assert command_from_pb(command_to_pb(message)) == message


def test_every_command_kind_is_its_wire_name() -> None:
    for command in COMMANDS:
        pb = command_to_pb(Command("c-1", command))
        assert pb.WhichOneof("action") == COMMAND_KINDS[type(command)]
    assert len(set(COMMAND_KINDS.values())) == len(agent_pb2.Command.DESCRIPTOR.oneofs_by_name[
        "action"].fields)


def test_a_command_this_side_does_not_know_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown command"):
        command_from_pb(agent_pb2.Command(command_id="x"))


def test_zero_health_fields_take_the_one_set_of_defaults() -> None:
    assert health_from_pb(types_pb2.HealthCheck()) == HealthCheck()


def observed(instance_id: str, state: str) -> ObservedInstance:
    return ObservedInstance(
        instance_id, "h1", "shop", "web", "1.2.0", "blue", state, 1.0, "127.0.0.2", 20001, 2,
        "why", {"cpu_cores": 0.5, "memory_bytes": 1024.0, "storage_bytes": 0.0,
                "network_tx_bps": 0.0, "pids": 3.0}, 100.5, 200.25, ("network",))


def test_a_registration_crosses_the_wire_unchanged() -> None:
    reg = Registration("h1", "demo", "127.0.0.2", Resources(cpu=4.0, memory=1 << 30),
                       {"rack": "r1"}, ("cpu", "memory"), "0.1.0",
                       tuple(observed(f"i{n}", s) for n, s in enumerate(InstanceState)),
                       ("demo:1",))
    assert registration_from_pb(registration_to_pb(reg)) == reg


def test_a_report_crosses_the_wire_unchanged() -> None:
    report = AgentReport(
        7, 1_700_000_000.5, (observed("i1", "running"),), ("i9",),
        (ReportedEvent("gc.collected", 12.0, "idle", "shop", "web", "1.2.0", "i1",
                       {"kind": "unused"}),),
        (MetricsWindow("shop", "web", "1.2.0", "i1", "h1", 10.0, 11.0, 5, 1,
                       LatencySketch.of([1.0, 2.0, 0.0, 40.0]), sample_every=50),),
        {"cpu_cores": 1.5, "memory_bytes": 2048.0}, ("c-1",),
        (CommandResult("c-1", True, "", 3, "out", "err", True, False),),
        wake_units=(("shop", "web"), ("shop", "api")))
    assert report_from_pb(report_to_pb(report, "h1"), "h1") == report


def test_a_window_belongs_to_the_stream_that_sent_it_whatever_it_claims() -> None:
    claimed = MetricsWindow("shop", "web", "1.2.0", "i1", "h1", 10.0, 11.0, 5, 1)
    pb = report_to_pb(AgentReport(1, 0.0, windows=(claimed,)), "h2")
    assert pb.windows[0].host_id == "h1"
    [got] = report_from_pb(pb, "h2").windows
    assert got.host_id == "h2"  # the session's host: the one whose HAProxy took the requests
    assert got.sample_every == 1  # an agent that does not say samples every request


@pytest.mark.parametrize("state", list(InstanceState))
def test_every_instance_state_maps_by_name(state: InstanceState) -> None:
    value = state_to_pb(state)
    assert types_pb2.InstanceState.Name(value) == f"INSTANCE_STATE_{state.name}"
    assert state_from_pb(value) is state


def test_unknown_states_slots_and_modes() -> None:
    assert state_to_pb("") == types_pb2.INSTANCE_STATE_UNSPECIFIED
    assert state_from_pb(types_pb2.INSTANCE_STATE_UNSPECIFIED) is None
    assert state_from_pb(99) is None
    assert [slot_from_pb(slot_to_pb(s)) for s in ("blue", "green", "")] == ["blue", "green", ""]
    assert [state_mode_from_pb(state_mode_to_pb(m)) for m in ("none", "shared", "snapshot")] \
        == ["none", "shared", "snapshot"]


def test_times_and_durations() -> None:
    assert timestamp_from_pb(timestamp_to_pb(1_700_000_000.25)) == 1_700_000_000.25
    assert timestamp_to_pb(0.0) == timestamp_pb2.Timestamp()
    assert timestamp_from_pb(timestamp_to_pb(1.9999999999)) == 2.0  # nanos never reach 1e9
    assert duration_from_pb(duration_to_pb(2.5)) == 2.5


CHANGES = {
    "state": st.sampled_from(["ready", "stopped", "error"]),
    "health_score": st.sampled_from([0.0, 0.4, 0.99]),
    "restarts": st.integers(0, 5), "reason": st.sampled_from(["", "oom"]),
    "port": st.integers(20000, 20003), "address": st.just("127.0.0.3"),
    "version": st.just("1.3.0"), "unit": st.just("api"), "apartment": st.just("other"),
    "slot": st.sampled_from(["green", ""]), "started_at": st.floats(0, 1e9),
    "unenforced_limits": st.just(()), "host_id": st.just("h2"),
    "usage": st.fixed_dictionaries({"cpu_cores": st.floats(0, 8)}),
    "last_activity": st.floats(0, 1e9),
}


@given(st.dictionaries(st.sampled_from(sorted(CHANGES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: CHANGES[k] for k in keys})))
def test_a_status_is_a_usage_reading_exactly_when_only_usage_and_activity_changed(
        changes: dict[str, object]) -> None:
    """Either path ends with the same observation: the known one with the reading's usage and
    activity equals the full conversion of the status."""
    known = observed("i1", "running")
    status = observed_to_pb(dataclasses.replace(known, **changes))  # type: ignore[arg-type]
    full = observed_from_pb(status, "h1")
    got = report_from_pb(agent_pb2.StatusReport(changed=[status]), "h1", {"i1": known})
    if dataclasses.replace(full, usage=known.usage, last_activity=known.last_activity) == known:
        assert got.changed == () and len(got.usage) == 1
        reading = got.usage[0]
        assert dataclasses.replace(known, usage=reading.usage,
                                   last_activity=reading.last_activity) == full
    else:
        assert got.changed == (full,) and got.usage == ()


def test_without_known_observations_every_status_is_converted_in_full() -> None:
    status = observed_to_pb(observed("i1", "running"))
    report = agent_pb2.StatusReport(changed=[status])
    assert report_from_pb(report, "h1").changed == (observed_from_pb(status, "h1"),)
    other_host = {"i1": dataclasses.replace(observed("i1", "running"), host_id="h2")}
    assert report_from_pb(report, "h1", other_host).usage == ()  # known from another host


def test_an_instance_twice_in_one_report_is_converted_in_full_in_order() -> None:
    known = observed("i1", "running")
    stopped = observed_to_pb(dataclasses.replace(known, state="stopped"))
    usage_only = observed_to_pb(dataclasses.replace(known, usage={"cpu_cores": 2.0}))
    got = report_from_pb(agent_pb2.StatusReport(changed=[stopped, usage_only]), "h1",
                         {"i1": known})
    assert got.usage == () and [o.state for o in got.changed] == ["stopped", "running"]
