"""The authorization table: complete for every RPC, and what each role and scope may do."""

from __future__ import annotations

import pytest

from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.identity import Identity, Role
from coordinator.api.authz import (
    ADMIN_RULES,
    ADMIN_SERVICE,
    AGENT_SERVICE,
    METHOD_RULES,
    ROLE_ACCESS,
    Access,
    decide,
    method_path,
)

ADMIN = Identity(Role.ADMIN, "alice")
VIEWER = Identity(Role.VIEWER, "bob")
HOST = Identity(Role.HOST, "h1")
COORDINATOR = Identity(Role.COORDINATOR, "c1")
SHOP_ADMIN = Identity(Role.ADMIN, "carol", frozenset({"shop"}))
SHOP_VIEWER = Identity(Role.VIEWER, "dan", frozenset({"shop", "blog"}))

READS = {"ListUnits", "GetUnit", "ListVersions", "ResolveDependencies", "GetRollout",
         "WatchRollout", "ListRollouts", "ListHosts", "ListInstances", "StreamEvents",
         "GetLeader", "GetDrainStatus"}


def admin(name: str) -> str:
    return method_path(ADMIN_SERVICE.full_name, name)


def test_every_admin_rpc_has_a_rule_and_no_rule_is_stale() -> None:
    assert set(ADMIN_RULES) == {m.name for m in ADMIN_SERVICE.methods}


def test_every_agent_stream_rpc_has_a_rule() -> None:
    for method in AGENT_SERVICE.methods:
        assert METHOD_RULES[method_path(AGENT_SERVICE.full_name, method.name)].access \
            is Access.AGENT


def test_reads_are_exactly_the_read_methods() -> None:
    assert {n for n, r in ADMIN_RULES.items() if r.access is Access.READ} == READS


@pytest.mark.parametrize("name", sorted(ADMIN_RULES))
def test_roles_on_admin_methods(name: str) -> None:
    request = admin_pb2.ListUnitsRequest()
    assert decide(ADMIN, admin(name), request) is None
    viewer = decide(VIEWER, admin(name), request)
    assert (viewer is None) == (name in READS)
    if viewer is not None:
        assert viewer.startswith(f"viewer/bob may not call {admin(name)}: ")
    assert decide(HOST, admin(name), request) == (
        f"host/h1 may not call {admin(name)}: host identities may call only the agent stream")
    assert decide(COORDINATOR, admin(name), request) is not None


def test_agent_stream_is_for_hosts_only() -> None:
    session = method_path(AGENT_SERVICE.full_name, "Session")
    assert decide(HOST, session, None) is None
    for other in (ADMIN, VIEWER, COORDINATOR):
        assert decide(other, session, None) is not None


def test_health_is_for_everyone_and_unknown_methods_for_no_one() -> None:
    for who in (ADMIN, VIEWER, HOST, COORDINATOR, SHOP_VIEWER):
        assert decide(who, "/grpc.health.v1.Health/Check", None) is None
        assert "not in the authorization table" in (decide(who, "/x.Y/Z", None) or "")


def test_apartment_scope() -> None:
    deploy = admin("Deploy")
    assert decide(SHOP_ADMIN, deploy, admin_pb2.DeployRequest(apartment="shop")) is None
    assert decide(SHOP_ADMIN, deploy, admin_pb2.DeployRequest(apartment="blog")) == (
        f"admin/carol (apartments shop) may not call {deploy} for apartment 'blog'")
    publish = admin("PublishVersion")
    ok = admin_pb2.PublishVersionRequest(spec=types_pb2.UnitSpec(apartment="shop"))
    other = admin_pb2.PublishVersionRequest(spec=types_pb2.UnitSpec(apartment="blog"))
    assert decide(SHOP_ADMIN, publish, ok) is None
    assert decide(SHOP_ADMIN, publish, other) is not None
    # a request about every apartment must name one of the scope
    assert "name one of its apartments" in (
        decide(SHOP_VIEWER, admin("ListUnits"), admin_pb2.ListUnitsRequest()) or "")
    assert decide(SHOP_VIEWER, admin("ListUnits"), admin_pb2.ListUnitsRequest(
        apartment="blog")) is None
    # fleet-wide reads are open to a scoped identity, fleet-wide writes are not
    assert decide(SHOP_VIEWER, admin("ListHosts"), admin_pb2.ListHostsRequest()) is None
    assert decide(SHOP_VIEWER, admin("GetLeader"), admin_pb2.GetLeaderRequest()) is None
    assert "whole fleet" in (decide(SHOP_ADMIN, admin("RunGarbageCollection"),
                                    admin_pb2.RunGarbageCollectionRequest()) or "")
    # a scoped viewer is still a viewer
    assert decide(SHOP_VIEWER, deploy, admin_pb2.DeployRequest(apartment="shop")) is not None


def test_every_role_has_its_access() -> None:
    assert set(ROLE_ACCESS) == set(Role)


def test_a_scoped_publish_depends_only_on_its_apartments() -> None:
    publish = admin("PublishVersion")

    def request(*dependencies: str) -> admin_pb2.PublishVersionRequest:
        return admin_pb2.PublishVersionRequest(spec=types_pb2.UnitSpec(
            apartment="shop", unit="web", dependencies=list(dependencies)))

    assert decide(SHOP_ADMIN, publish, request("db@^1", "shop/cache@~2")) is None
    assert decide(SHOP_ADMIN, publish, request("db@^1", "blog/api@^2")) == (
        f"admin/carol (apartments shop) may not call {publish} for apartment 'shop' with a "
        "dependency on 'blog/api': apartment 'blog' is outside its apartments")
    # an identity scoped to both, and an unscoped one, may tie them
    both = Identity(Role.ADMIN, "erin", frozenset({"shop", "blog"}))
    assert decide(both, publish, request("blog/api@^2")) is None
    assert decide(ADMIN, publish, request("blog/api@^2")) is None
    # a malformed dependency is left to the servicer (INVALID_ARGUMENT before any lookup)
    assert decide(SHOP_ADMIN, publish, request("blog/api")) is None


def _request_about(name: str, apartment: str) -> object:
    """The method's own request message, about ``apartment`` (in the field the servicer
    reads: the request's ``apartment``, or its ``spec``'s)."""
    request = getattr(admin_pb2, ADMIN_SERVICE.methods_by_name[name].input_type.name)()
    if "apartment" in request.DESCRIPTOR.fields_by_name:
        request.apartment = apartment
    else:
        request.spec.apartment = apartment
    return request


@pytest.mark.parametrize("name", sorted(n for n, r in ADMIN_RULES.items() if r.apartment))
def test_each_scoped_method_reads_the_apartment_of_its_own_request(name: str) -> None:
    assert decide(SHOP_ADMIN, admin(name), _request_about(name, "shop")) is None
    assert decide(SHOP_ADMIN, admin(name), _request_about(name, "blog")) == (
        f"admin/carol (apartments shop) may not call {admin(name)} for apartment 'blog'")
