"""The data plane of a unit, decided from the route record and what agents observed.

Every host gets the same server list (all instances of the unit on every host of the
building) with the same weights, so a request entering any host splits the same way.
Only routable instances (running and healthy, not paused, not collected, on a host that is
not lost) get a weight; the others are listed in ``maint`` with weight 0 so they can be
switched on without a reload. When a version's share has no routable instance, its share
goes to the versions that have one (never to nothing); when no version has one, every
weight is 0. When every instance is paused, the route carries ``retry_after_s``: the entry
point's 503s say when to come back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from fractions import Fraction

from common.stream_commands import SetRoute
from common.stream_messages import ObservedInstance, RouteServer
from common.weights import split_weights
from coordinator.state.records import HostRecord, InstanceRecord, RouteRecord

__all__ = ["PAUSED_RETRY_AFTER_S", "plan_route", "routable_split"]

PAUSED_RETRY_AFTER_S = 10
"""The ``Retry-After`` (seconds) of a wholly paused unit's 503s."""


def routable_split(
    split: Mapping[str, float], servers: Mapping[str, Sequence[str]]
) -> dict[str, Fraction]:
    """``split`` rescaled over the versions that have servers (empty if none has)."""
    live = {v: Fraction(p) for v, p in split.items() if p > 0 and servers.get(v)}
    total = sum(live.values())
    if not total:
        return {}
    return {version: share * 100 / total for version, share in live.items()}


def plan_route(
    route: RouteRecord,
    instances: Sequence[InstanceRecord],
    observed: Mapping[str, ObservedInstance],
    hosts: Mapping[str, HostRecord],
    lost_hosts: Collection[str] = (),
    retry_after_s: int = 0,
) -> SetRoute:
    """``retry_after_s``: what the 503s of a unit whose instances are all paused carry."""
    routable: dict[str, list[str]] = {}
    for inst in instances:
        seen = observed.get(inst.instance_id)
        if seen is not None and seen.routable and inst.host_id not in lost_hosts \
                and not inst.paused and not inst.collected:
            routable.setdefault(inst.version, []).append(inst.instance_id)
    shares = routable_split(route.split, routable)
    weights: dict[str, int] = {}
    if shares:
        weights = split_weights(shares, {v: routable.get(v, []) for v in shares})
    live_ids = {iid for ids in routable.values() for iid in ids}
    servers = []
    for inst in sorted(instances, key=lambda i: i.instance_id):
        host = hosts.get(inst.host_id)
        if host is None:
            continue
        weight = weights.get(inst.instance_id, 0)
        live = inst.instance_id in live_ids
        servers.append(
            RouteServer(
                server=inst.instance_id,
                version=inst.version,
                address=host.address,
                port=inst.port,
                weight=weight,
                state="ready" if live else "maint",
            )
        )
    return SetRoute(
        apartment=route.apartment,
        unit=route.unit,
        service_port=route.service_port,
        health_path=route.health_path,
        servers=tuple(servers),
        sticky=route.sticky,
        retry_after_s=retry_after_s if instances and all(i.paused for i in instances) else 0,
    )
