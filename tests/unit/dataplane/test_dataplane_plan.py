from __future__ import annotations

from pathlib import Path

from agent.dataplane.haproxy_output import ServerStateRow
from agent.dataplane.haproxy_plan import (
    Observed,
    expected_observation,
    observe_commands,
    plan_runtime,
)
from agent.dataplane.model import DataPlaneSpec, ServerSpec, ServerState, UnitSpec
from agent.dataplane.settings import DataPlaneSettings, HaproxyPaths

PATHS = HaproxyPaths(Path("/d/haproxy"))
SETTINGS = DataPlaneSettings()
PIN, VERSION = PATHS.map_file("web", "pin"), PATHS.map_file("web", "version")
A = ServerSpec("a", "127.0.0.3", 31001, "1.0.0", 30)
B = ServerSpec("b", "127.0.0.4", 31002, "1.1.0", 70)


def spec_with(*servers: ServerSpec) -> DataPlaneSpec:
    unit = UnitSpec("web", 8080, pin_slots=2)
    for item in servers:
        unit = unit.with_server(item)
    return DataPlaneSpec("127.0.0.2").with_unit(unit)


def row(backend: str, spec: ServerSpec, weight: int, admin_bits: int = 0) -> ServerStateRow:
    return ServerStateRow(backend, spec.name, spec.addr, spec.port, 2, admin_bits, weight, weight)


def in_sync(spec: DataPlaneSpec) -> Observed:
    unit = spec.unit("web")
    rows = [row(b, s, w) for b, members in unit.backends().items() for s, w in members]
    maps = {
        PIN: unit.pin_map(),
        PATHS.map_file("web", "sticky"): unit.sticky_map(),
        VERSION: unit.version_map(),
    }
    return Observed(rows, maps)


def test_nothing_to_do_when_haproxy_matches() -> None:
    spec = spec_with(A, B)
    assert plan_runtime(spec, in_sync(spec), PATHS, SETTINGS).empty


def test_new_server_is_added_to_its_backends_then_mapped() -> None:
    before = spec_with(A)
    plan = plan_runtime(spec_with(A, B), in_sync(before), PATHS, SETTINGS)
    assert plan.commands == (
        "add server be.web/b 127.0.0.4:31002 weight 70 check inter 1000 rise 2 fall 2"
        " pool-max-conn -1 pool-purge-delay 5s",
        "enable health be.web/b",
        "set server be.web/b state ready",
        "add server pin1.web/b 127.0.0.4:31002 weight 1 check inter 1000 rise 2 fall 2"
        " pool-max-conn -1 pool-purge-delay 5s",
        "enable health pin1.web/b",
        "set server pin1.web/b state ready",
        f"add map {PIN} 1.1.0 pin1.web",
        f"add map {VERSION} b 1.1.0",
    )
    assert plan.deletions == ()


def test_added_server_in_maintenance_stays_there() -> None:
    maint = ServerSpec("m", "127.0.0.3", 31009, "1.0.0", 0, ServerState.MAINT)
    plan = plan_runtime(spec_with(A, maint), in_sync(spec_with(A)), PATHS, SETTINGS)
    assert not any("be.web/m state" in c for c in plan.commands)
    assert "enable health be.web/m" in plan.commands


def test_weights_and_states_are_aligned_in_one_batch() -> None:
    now = spec_with(A, B)
    wanted = spec_with(A, B).unit("web").with_weights({"a": 0, "b": 100})
    wanted = wanted.with_state("a", ServerState.DRAIN)
    plan = plan_runtime(now.with_unit(wanted), in_sync(now), PATHS, SETTINGS)
    assert plan.commands == (
        "set server be.web/a weight 0",
        "set server be.web/a state drain",
        "set server be.web/b weight 100",
        "set server pin0.web/a state drain",
        f"del map {PIN} 1.0.0",  # no ready server of 1.0.0 left to pin to
    )


def test_removed_server_goes_to_maintenance_then_is_deleted() -> None:
    plan = plan_runtime(spec_with(A), in_sync(spec_with(A, B)), PATHS, SETTINGS)
    assert plan.commands == (
        f"del map {PIN} 1.1.0",
        f"del map {VERSION} b",
        "set server be.web/b state maint",
        "set server pin1.web/b state maint",
    )
    assert plan.deletions == (("be.web", "b"), ("pin1.web", "b"))


def test_moved_server_and_changed_map_values_are_updated() -> None:
    observed = in_sync(spec_with(A))
    moved = ServerSpec("a", "127.0.0.5", 31005, "1.0.0", 30)
    stale_maps = {**observed.maps, PIN: {"1.0.0": "pin1.web"}}
    plan = plan_runtime(spec_with(moved), Observed(observed.servers, stale_maps), PATHS, SETTINGS)
    assert f"set map {PIN} 1.0.0 pin0.web" in plan.commands
    assert "set server be.web/a addr 127.0.0.5 port 31005" in plan.commands
    assert "set server pin0.web/a addr 127.0.0.5 port 31005" in plan.commands


def test_backends_of_other_units_are_left_alone() -> None:
    spec = spec_with(A)
    stray = ServerStateRow("be.old", "x", "127.0.0.3", 1, 2, 0, 1, 1)
    observed = in_sync(spec)
    plan = plan_runtime(spec, Observed([*observed.servers, stray], observed.maps), PATHS, SETTINGS)
    assert plan.empty


def test_observe_commands_cover_every_backend_and_map() -> None:
    commands = observe_commands([spec_with(A).unit("web")], PATHS)
    assert commands == [
        "show servers state be.web",
        "show servers state pin0.web",
        "show servers state pin1.web",
        f"show map {PIN}",
        f"show map {PATHS.map_file('web', 'sticky')}",
        f"show map {VERSION}",
    ]


def test_expected_observation_is_what_a_matching_haproxy_reports() -> None:
    spec = spec_with(A, B)
    spec = spec.with_unit(spec.unit("web").with_state("b", ServerState.DRAIN))
    expected = expected_observation(spec, ["web"], PATHS)
    assert plan_runtime(spec, expected, PATHS, SETTINGS).empty
    wanted = spec.with_unit(spec.unit("web").with_weights({"a": 5}).without_server("b"))
    from_spec = plan_runtime(wanted, expected, PATHS, SETTINGS)
    drained = spec.unit("web")
    observed = in_sync(spec)
    real = Observed(
        [
            row(r.backend, drained.server(r.server), r.weight, 0x08 if r.server == "b" else 0)
            for r in observed.servers
        ],
        observed.maps,
    )
    assert from_spec == plan_runtime(wanted, real, PATHS, SETTINGS)
    assert expected_observation(spec, ["gone"], PATHS) == Observed([], {})
