from __future__ import annotations

import json

import pytest

from agent.dataplane.model import DataPlaneSpec, ServerSpec, ServerState, UnitSpec
from common.errors import InvalidArgument, NotFound


def server(name: str, version: str, weight: int = 0, port: int = 31000) -> ServerSpec:
    return ServerSpec(name, "127.0.0.3", port, version, weight)


def unit_with(*servers: ServerSpec, slots: int = 3, sticky: bool = False) -> UnitSpec:
    unit = UnitSpec("web", 8080, sticky=sticky, pin_slots=slots)
    for item in servers:
        unit = unit.with_server(item)
    return unit


def test_each_version_gets_a_pin_slot_that_it_keeps_while_it_has_servers() -> None:
    unit = unit_with(server("a", "1.0.0"), server("b", "1.1.0"), server("c", "1.1.0"))
    assert dict(unit.pins) == {"1.0.0": 0, "1.1.0": 1}
    unit = unit.without_server("a").with_server(server("d", "2.0.0"))
    assert dict(unit.pins) == {"1.1.0": 1, "2.0.0": 0}  # the freed slot is reused
    assert unit.without_server("b").pins["1.1.0"] == 1  # c still holds the version


def test_more_versions_than_slots_grow_the_slot_count() -> None:
    unit = unit_with(server("a", "1"), server("b", "2"), server("c", "3"), slots=2)
    assert unit.pin_slots == 3 and sorted(unit.pins.values()) == [0, 1, 2]
    assert len(unit.backends()) == 1 + 3


def test_backends_put_every_server_in_the_main_backend_and_its_version_pin() -> None:
    unit = unit_with(server("a", "1.0.0", 30), server("b", "1.1.0", 70))
    backends = unit.backends()
    assert [(s.name, w) for s, w in backends["be.web"]] == [("a", 30), ("b", 70)]
    assert [(s.name, w) for s, w in backends["pin0.web"]] == [("a", 1)]
    assert [(s.name, w) for s, w in backends["pin1.web"]] == [("b", 1)]
    assert backends["pin2.web"] == []


def test_maps_follow_states_and_weights() -> None:
    unit = unit_with(server("a", "1.0.0", 100), server("b", "1.1.0", 0), sticky=True)
    assert unit.pin_map() == {"1.0.0": "pin0.web", "1.1.0": "pin1.web"}
    # weight 0 keeps its sticky clients (a canary's stable at the 100 % step)
    assert unit.sticky_map() == {"1.0.0": "pin0.web", "1.1.0": "pin1.web"}
    assert unit.version_map() == {"a": "1.0.0", "b": "1.1.0"}
    drained = unit.with_state("b", ServerState.DRAIN)
    assert drained.pin_map() == {"1.0.0": "pin0.web"}  # no ready server left for 1.1.0
    assert drained.sticky_map() == {"1.0.0": "pin0.web"}  # its cookie follows the weights
    assert unit.without_server("b").sticky_map() == {"1.0.0": "pin0.web"}
    assert unit_with(server("a", "1.0.0", 100)).sticky_map() == {}  # stickiness off


def test_weights_are_checked_and_servers_must_exist() -> None:
    unit = unit_with(server("a", "1.0.0"))
    assert unit.with_weights({"a": 256}).server("a").weight == 256
    with pytest.raises(InvalidArgument):
        unit.with_weights({"a": 257})
    with pytest.raises(InvalidArgument):
        unit.with_weights({"a": True})
    with pytest.raises(NotFound):
        unit.with_weights({"zz": 1})
    with pytest.raises(NotFound):
        unit.with_state("zz", ServerState.DRAIN)


@pytest.mark.parametrize(
    "bad",
    [
        ServerSpec("a b", "127.0.0.3", 1, "1.0.0", 0),
        ServerSpec("a", "localhost", 1, "1.0.0", 0),
        ServerSpec("a", "127.0.0.3", 0, "1.0.0", 0),
        ServerSpec("a", "127.0.0.3", 1, "1.0.0 x", 0),
        ServerSpec("a", "127.0.0.3", 1, "1.0.0", -1),
    ],
)
def test_bad_servers_are_refused(bad: ServerSpec) -> None:
    with pytest.raises(InvalidArgument):
        UnitSpec("web", 8080).with_server(bad)


def test_bad_units_and_port_clashes_are_refused() -> None:
    spec = DataPlaneSpec("127.0.0.2").with_unit(UnitSpec("web", 8080))
    with pytest.raises(InvalidArgument):
        spec.with_unit(UnitSpec("api", 8080))
    with pytest.raises(InvalidArgument):
        spec.with_unit(UnitSpec("bad name", 8081))
    with pytest.raises(InvalidArgument):
        spec.with_unit(UnitSpec("api", 8081, health_path="healthz"))
    with pytest.raises(NotFound):
        spec.unit("api")
    assert spec.with_unit(UnitSpec("web", 8080, "/ready")).unit("web").health_path == "/ready"


def test_spec_round_trips_through_json() -> None:
    unit = unit_with(server("a", "1.0.0", 10), server("b", "1.1.0", 20), sticky=True)
    unit = unit.with_state("b", ServerState.MAINT)
    spec = DataPlaneSpec("127.0.0.2").with_unit(unit).with_unit(UnitSpec("api", 9090))
    again = DataPlaneSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert spec.without_unit("api").units.keys() == {"web"}
