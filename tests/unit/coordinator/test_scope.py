"""What an apartment-scoped caller is shown of the dependency graph (coordinator/api/scope.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common.identity import Identity, Role
from common.resources import Resources
from common.unit_spec import HealthCheck, UnitSpec
from common.versions import VersionTag
from coordinator.api.convert_admin import version_to_pb
from coordinator.api.scope import everything, visible_edges, visible_resolved
from coordinator.registry import ResolvedEdge
from coordinator.state.records import VersionRecord

SHOP = Identity(Role.VIEWER, "dan", frozenset({"shop"}))

EDGES = [
    ResolvedEdge("shop/db", "^1", "1.2.0", "shop/web"),
    ResolvedEdge("blog/api", "^2", "2.0.0", "shop/web"),
    ResolvedEdge("blog/cache", "~3.1", "3.1.4", "blog/api"),
    ResolvedEdge("shop/lib", "*", "0.1.0", "blog/api"),
]


def test_edges_inside_other_apartments_are_hidden() -> None:
    assert visible_edges(EDGES, SHOP.reaches) == EDGES[:2]  # what shop's units declare
    assert visible_edges(EDGES, everything) == EDGES
    assert visible_edges(EDGES, Identity(Role.ADMIN, "root").reaches) == EDGES


def test_resolved_keeps_direct_dependencies_and_reached_apartments() -> None:
    resolved = {"shop/db": "1.2.0", "blog/api": "2.0.0", "blog/cache": "3.1.4"}
    assert visible_resolved(resolved, ["shop/db", "blog/api"], SHOP.reaches) == {
        "shop/db": "1.2.0", "blog/api": "2.0.0"}
    assert visible_resolved(resolved, [], everything) == resolved


units = st.sampled_from(["shop/a", "shop/b", "blog/a", "blog/b", "ops/x"])


@given(st.dictionaries(units, st.sampled_from(["1.0.0", "2.0.0"])), st.sets(units),
       st.sets(st.sampled_from(["shop", "blog", "ops"]), min_size=1))
def test_resolved_is_exactly_what_the_scope_may_see(
        resolved: dict[str, str], direct: set[str], apartments: set[str]) -> None:
    reach = Identity(Role.ADMIN, "x", frozenset(apartments)).reaches
    shown = visible_resolved(resolved, direct, reach)
    assert shown.items() <= resolved.items()
    for unit in resolved:
        assert (unit in shown) == (unit in direct or unit.partition("/")[0] in apartments)


def test_a_version_shows_a_scoped_caller_only_its_side_of_the_graph() -> None:
    spec = UnitSpec("shop", "web", "1.0.0", "demo:1", 0, (), {},
                    HealthCheck("/healthz", (), 3.0, 1.0, 4), Resources(cpu=0.5),
                    ("db@^1.0.0", "blog/api@^2"))
    tag = VersionTag("shop/web", "1.0.0", 1.0, spec.checksum(), spec,
                     {"shop/db": "1.2.0", "blog/api": "2.0.0", "blog/cache": "3.1.4"})
    record = VersionRecord(tag, {})
    shown = [(r.unit, r.version) for r in version_to_pb(record, SHOP.reaches).resolved]
    assert shown == [("blog/api", "2.0.0"), ("shop/db", "1.2.0")]
    assert len(version_to_pb(record).resolved) == 3
