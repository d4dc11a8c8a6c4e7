"""Placement: spread, capacity on all four resources, ports, all-or-nothing refusals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import FailedPrecondition, InsufficientResources, InvalidArgument
from common.resources import HostLedger, Resources
from coordinator.fleet.placement import HostRoom, PlacementRequest, place

GiB = 1 << 30
SMALL = Resources(cpu=0.5, memory=256 << 20)


def room(
    host: str,
    cpu: float = 4,
    memory: int = 8 * GiB,
    storage: int = 100 * GiB,
    network: int = 10**9,
    held: dict[str, Resources] | None = None,
    slots: dict[tuple[str, str, str], int] | None = None,
    ports: frozenset[int] = frozenset(),
) -> HostRoom:
    ledger = HostLedger(host, Resources(cpu, memory, storage, network), held or {})
    return HostRoom.of(ledger, ports, slots)


def request(
    n: int, resources: Resources = SMALL, slot: str = "blue", exclude: frozenset[str] = frozenset()
) -> PlacementRequest:
    return PlacementRequest(
        "shop", "web", slot, resources, tuple(f"i{k}" for k in range(n)), "b1", exclude
    )


def test_spreads_one_per_host_before_doubling_up() -> None:
    hosts = [room("a"), room("b"), room("c")]
    placed = place(request(3), hosts)
    assert sorted(p.host_id for p in placed) == ["a", "b", "c"]
    placed = place(request(5), hosts)
    counts = {h: sum(p.host_id == h for p in placed) for h in "abc"}
    assert sorted(counts.values()) == [1, 2, 2]


def test_existing_instances_of_the_same_slot_count_for_spreading() -> None:
    key = ("shop", "web", "blue")
    hosts = [room("a", slots={key: 1}), room("b")]
    assert [p.host_id for p in place(request(1), hosts)] == ["b"]
    # another slot of the same unit does not count
    assert [
        p.host_id
        for p in place(
            request(1, slot="green"), [room("a", slots={key: 1}), room("b", memory=4 * GiB)]
        )
    ] == ["a"]


def test_never_doubles_up_while_another_host_has_room() -> None:
    key = ("shop", "web", "blue")
    # b is fuller but still has room: it wins over a second instance on a
    hosts = [room("a", slots={key: 1}), room("b", held={"x": Resources(3, 7 * GiB)})]
    assert [p.host_id for p in place(request(1), hosts)] == ["b"]


def test_a_full_host_is_skipped() -> None:
    hosts = [room("a", held={"x": Resources(cpu=3.8)}), room("b")]
    assert {p.host_id for p in place(request(2), hosts)} == {"b"}


@pytest.mark.parametrize("resource", ["cpu", "memory", "storage", "network"])
def test_refusal_names_the_short_resource(resource: str) -> None:
    wanted = {
        "cpu": Resources(cpu=8),
        "memory": Resources(memory=16 * GiB),
        "storage": Resources(storage=500 * GiB),
        "network": Resources(network=10**10),
    }
    with pytest.raises(InsufficientResources) as refused:
        place(request(1, wanted[resource]), [room("a"), room("b")])
    assert refused.value.context["resource"] == resource
    assert str(refused.value).startswith(f"insufficient {resource}")
    assert refused.value.code == "RESOURCE_EXHAUSTED"


def test_all_or_nothing_when_only_some_fit() -> None:
    hosts = [room("a", cpu=1), room("b", cpu=1)]
    with pytest.raises(InsufficientResources) as refused:
        place(request(5), hosts)
    assert "4 of 5" in str(refused.value)


def test_ports_are_unique_per_host_and_skip_taken_ones() -> None:
    placed = place(request(3), [room("a", ports=frozenset({20000}))], (20000, 20010))
    assert [p.port for p in placed] == [20001, 20002, 20003]
    with pytest.raises(InsufficientResources) as refused:
        place(request(2), [room("a")], (20000, 20000))
    assert refused.value.context["resource"] == "ports"


def test_excluded_and_missing_hosts() -> None:
    with pytest.raises(FailedPrecondition):
        place(request(1), [])
    with pytest.raises(FailedPrecondition):
        place(request(1, exclude=frozenset({"a"})), [room("a")])
    with pytest.raises(InvalidArgument):
        PlacementRequest("shop", "web", "blue", SMALL, ("x", "x"))


@settings(max_examples=200, deadline=None)
@given(
    capacities=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 16)), min_size=1, max_size=6),
    replicas=st.integers(1, 12),
    cpu=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    memory_gib=st.sampled_from([1, 2, 4]),
)
def test_never_overcommits_and_spreads_evenly(
    capacities: list[tuple[int, int]], replicas: int, cpu: float, memory_gib: int
) -> None:
    hosts = [room(f"h{i}", cpu=c, memory=m * GiB) for i, (c, m) in enumerate(capacities)]
    wanted = Resources(cpu=cpu, memory=memory_gib * GiB)
    try:
        placed = place(request(replicas, wanted), hosts)
    except InsufficientResources:
        # refused only if a greedy fill by capacity really cannot hold them all
        fit = sum(min(int(c // cpu), m // memory_gib) for c, m in capacities)
        assert fit < replicas
        return
    assert len(placed) == replicas
    for i, (c, m) in enumerate(capacities):
        mine = [p for p in placed if p.host_id == f"h{i}"]
        assert len(mine) * cpu <= c + 1e-9 and len(mine) * memory_gib <= m
        assert len({p.port for p in mine}) == len(mine)
    # a host got a second instance only if every host that could still fit one had one
    counts = {f"h{i}": sum(p.host_id == f"h{i}" for p in placed) for i in range(len(hosts))}
    for i, (c, m) in enumerate(capacities):
        fits_one = c >= cpu and m >= memory_gib
        if fits_one and counts[f"h{i}"] == 0:
            assert max(counts.values()) <= 1


def _reference(req: PlacementRequest, hosts: list[HostRoom],
               port_range: tuple[int, int]) -> list[tuple[str, str, int]]:
    """The rules applied literally: rank every candidate host for every instance."""
    rooms = {h.host_id: h for h in hosts}
    key = (req.apartment, req.unit, req.slot)
    out: list[tuple[str, str, int]] = []
    for iid in req.instance_ids:
        fitting = []
        for r in rooms.values():
            port = next((p for p in range(port_range[0], port_range[1] + 1)
                         if p not in r.ports), None)
            if r.fits(req.resources) and port is not None:
                free = r.available
                fractions = [free.cpu / r.capacity.cpu if r.capacity.cpu else 0.0,
                             free.memory / r.capacity.memory if r.capacity.memory else 0.0]
                fitting.append(((r.slots.get(key, 0), -min(fractions), r.host_id), r, port))
        if not fitting:
            return [*out, ("refused", "", 0)]
        _, best, port = min(fitting, key=lambda f: f[0])
        out.append((iid, best.host_id, port))
        slots = {**best.slots, key: best.slots.get(key, 0) + 1}
        rooms[best.host_id] = HostRoom(best.host_id, best.capacity,
                                       best.allocated + req.resources, best.ports | {port},
                                       slots)
    return out


@given(
    cpus=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=1, max_size=6),
    held=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    taken=st.lists(st.frozensets(st.integers(20000, 20005), max_size=5), min_size=6,
                   max_size=6),
    replicas=st.integers(1, 12),
)
@settings(max_examples=200)
def test_the_heap_decides_what_ranking_every_host_every_time_decides(
        cpus: list[float], held: list[int], taken: list[frozenset[int]], replicas: int) -> None:
    hosts = [room(f"h{i}", cpu=cpu, held={f"x{j}": SMALL for j in range(held[i])},
                  slots={("shop", "web", "blue"): held[i] % 2}, ports=taken[i])
             for i, cpu in enumerate(cpus)]
    req = request(replicas)
    expected = _reference(req, hosts, (20000, 20005))
    try:
        found = [(p.instance_id, p.host_id, p.port) for p in
                 place(req, hosts, (20000, 20005))]
    except InsufficientResources:
        assert expected[-1][0] == "refused"
        return
    assert found == expected
