"""Who may call what: the authorization table of the coordinator's gRPC methods.

Every method the coordinator serves has one Rule here (tests/unit/coordinator/test_authz.py
fails when an Admin RPC has none, so a new RPC cannot be forgotten). Roles reach access
levels as ``ROLE_ACCESS`` says: admin everything on the admin API, viewer the read methods
(list, show, status, watch, events), a host the agent stream only, any authenticated
identity the health check. Apartment scope (docs/security.md): a scoped identity must name
one of its apartments in a request about units, and every other apartment the request reaches
(a published version's dependencies) must be one of them too; fleet-wide reads (hosts, leader)
are open to it, fleet-wide writes (GC) are not. What a scoped identity is shown inside an
admitted call is narrowed by coordinator/api/scope.py. ``decide`` is pure; the interceptor
applies it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from common.dependencies import parse_dependency
from common.errors import LandlordError
from common.gen.landlord.v1 import admin_pb2, agent_pb2
from common.identity import Identity, Role

__all__ = [
    "ADMIN_RULES",
    "METHOD_RULES",
    "ROLE_ACCESS",
    "Access",
    "Rule",
    "decide",
    "method_path",
]


class Access(StrEnum):
    READ = "read"
    WRITE = "write"
    AGENT = "agent"
    ANY = "any"


ROLE_ACCESS: dict[Role, frozenset[Access]] = {
    Role.ADMIN: frozenset({Access.READ, Access.WRITE, Access.ANY}),
    Role.VIEWER: frozenset({Access.READ, Access.ANY}),
    Role.HOST: frozenset({Access.AGENT, Access.ANY}),
    Role.COORDINATOR: frozenset({Access.ANY}),
}

_ROLE_REACH = {
    Role.ADMIN: "every admin method",
    Role.VIEWER: "only read methods (list, show, status, watch, events)",
    Role.HOST: "only the agent stream",
    Role.COORDINATOR: "only the health check",
}

ApartmentOf = Callable[[Any], str]
ReachedUnits = Callable[[Any], Iterable[str]]


@dataclass(frozen=True)
class Rule:
    access: Access
    apartment: ApartmentOf | None = None
    """The apartment a request is about ('' = every apartment); None: fleet-wide method."""
    reaches: ReachedUnits | None = None
    """Units (``apartment/unit``) of other apartments the request ties its own to; a scoped
    identity must reach each one's apartment too."""


def _apartment(request: Any) -> str:
    return str(request.apartment)


def _published_apartment(request: admin_pb2.PublishVersionRequest) -> str:
    return request.spec.apartment


def _published_dependencies(request: admin_pb2.PublishVersionRequest) -> list[str]:
    """The qualified units the published version depends on. A malformed dependency is
    skipped: the servicer refuses it (INVALID_ARGUMENT) before looking anything up."""
    found = []
    for text in request.spec.dependencies:
        try:
            found.append(parse_dependency(text, request.spec.apartment).unit)
        except LandlordError:
            continue
    return found


ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentStream"]

ADMIN_RULES: dict[str, Rule] = {
    "PublishVersion": Rule(Access.WRITE, _published_apartment, _published_dependencies),
    "ListUnits": Rule(Access.READ, _apartment),
    "GetUnit": Rule(Access.READ, _apartment),
    "ListVersions": Rule(Access.READ, _apartment),
    "ResolveDependencies": Rule(Access.READ, _apartment),
    "Deploy": Rule(Access.WRITE, _apartment),
    "GetRollout": Rule(Access.READ, _apartment),
    "WatchRollout": Rule(Access.READ, _apartment),
    "ControlRollout": Rule(Access.WRITE, _apartment),
    "ListRollouts": Rule(Access.READ, _apartment),
    "Rollback": Rule(Access.WRITE, _apartment),
    "StopUnit": Rule(Access.WRITE, _apartment),
    "WakeUnit": Rule(Access.WRITE, _apartment),
    "DeleteUnit": Rule(Access.WRITE, _apartment),
    "ScaleUnit": Rule(Access.WRITE, _apartment),
    # -- pause and resume (issue 17) --
    "PauseUnit": Rule(Access.WRITE, _apartment),
    "ResumeUnit": Rule(Access.WRITE, _apartment),
    "ListHosts": Rule(Access.READ),
    "ListInstances": Rule(Access.READ, _apartment),
    "RunGarbageCollection": Rule(Access.WRITE),
    "CordonHost": Rule(Access.WRITE),
    "UncordonHost": Rule(Access.WRITE),
    "DrainHost": Rule(Access.WRITE),
    "GetDrainStatus": Rule(Access.READ),
    "DecommissionHost": Rule(Access.WRITE),
    "RebalanceUnits": Rule(Access.WRITE, _apartment),
    "GetRebalanceStatus": Rule(Access.READ, _apartment),
    "StreamEvents": Rule(Access.READ, _apartment),
    "GetLeader": Rule(Access.READ),
    "SaveSnapshot": Rule(Access.WRITE),
    # admins only, fleet-wide: logs may hold secrets; exec runs anything in the container
    "InstanceLogs": Rule(Access.WRITE),
    "ExecInstance": Rule(Access.WRITE),  # admins only: a snapshot holds secret env values
}
"""Admin service method name -> who may call it."""


def method_path(service: str, method: str) -> str:
    """The ``/package.Service/Method`` path gRPC hands an interceptor."""
    return f"/{service}/{method}"


METHOD_RULES: dict[str, Rule] = {
    **{method_path(ADMIN_SERVICE.full_name, name): rule for name, rule in ADMIN_RULES.items()},
    method_path(AGENT_SERVICE.full_name, "Session"): Rule(Access.AGENT),
    "/grpc.health.v1.Health/Check": Rule(Access.ANY),
    "/grpc.health.v1.Health/Watch": Rule(Access.ANY),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Rule(Access.READ),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Rule(Access.READ),
}
"""Every method path the coordinator serves -> its rule; a path not here is refused."""


def decide(identity: Identity, method: str, request: Any | None) -> str | None:
    """None when ``identity`` may call ``method`` with ``request``, else why not (a sentence).

    ``request`` is None for client-streaming methods, whose rules are never apartment-bound.
    """
    rule = METHOD_RULES.get(method)
    if rule is None:
        return f"{identity} may not call {method}: it is not in the authorization table"
    if rule.access not in ROLE_ACCESS[identity.role]:
        return (f"{identity} may not call {method}: {identity.role} identities may call "
                f"{_ROLE_REACH[identity.role]}")
    if identity.apartments is None:
        return None
    if rule.apartment is None:
        if rule.access is Access.WRITE:
            return (f"{identity} may not call {method}: it acts on the whole fleet and the "
                    "identity is limited to some apartments")
        return None
    apartment = rule.apartment(request) if request is not None else ""
    if not apartment:
        return (f"{identity} may not call {method} for every apartment; name one of its "
                "apartments (--apartment)")
    if not identity.reaches(apartment):
        return f"{identity} may not call {method} for apartment {apartment!r}"
    for unit in rule.reaches(request) if rule.reaches is not None else ():
        other = unit.partition("/")[0]
        if not identity.reaches(other):
            return (f"{identity} may not call {method} for apartment {apartment!r} with a "
                    f"dependency on {unit!r}: apartment {other!r} is outside its apartments")
    return None
