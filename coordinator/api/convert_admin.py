"""Protobuf <-> coordinator dataclasses for the admin API (the edge; nothing else imports pb)."""

from __future__ import annotations

from common.dependencies import parse_dependency
from common.errors import InvalidArgument
from common.gen.landlord.v1 import admin_pb2, types_pb2
from common.network_modes import parse_network_mode
from common.proto_values import (
    duration_from_pb,
    duration_to_pb,
    resources_from_pb,
    resources_to_pb,
    slot_to_pb,
    state_mode_from_pb,
    state_mode_to_pb,
    timestamp_to_pb,
)
from common.stream_convert import health_from_pb, health_to_pb, observed_to_pb
from common.unit_spec import StateMode, UnitSpec, redacted_secrets
from common.versions import ChangeSet
from coordinator.api.read_models import HostListing, InstanceListing, UnitListing
from coordinator.api.scope import Reach, everything, visible_resolved
from coordinator.registry import ResolvedEdge
from coordinator.state.records import EventRecord, VersionRecord

__all__ = [
    "event_to_pb",
    "host_to_pb",
    "instance_to_pb",
    "publish_from_pb",
    "resolved_to_pb",
    "unit_to_pb",
    "version_to_pb",
]


def publish_from_pb(
    req: admin_pb2.PublishVersionRequest,
) -> tuple[UnitSpec, ChangeSet, dict[str, str]]:
    pb = req.spec
    if not req.HasField("spec"):
        raise InvalidArgument("spec is required", field="spec")
    h = pb.health
    health = health_from_pb(h)
    warmup = duration_from_pb(h.warmup)
    idle = duration_from_pb(pb.idle_timeout)
    if warmup < 0 or idle < 0:
        raise InvalidArgument("durations must not be negative", field="health")
    spec = UnitSpec(
        apartment=pb.apartment, unit=pb.unit, version=req.version, image=pb.image,
        port=pb.port, command=tuple(pb.command), env=dict(pb.env),
        secret_env=dict(pb.secret_env), health_check=health,
        resources=resources_from_pb(pb.resources),
        dependencies=tuple(pb.dependencies), service_port=pb.service_port,
        state_mode=StateMode(state_mode_from_pb(pb.state_mode)), idle_timeout_s=idle,
        warmup_s=warmup, healthy_threshold=h.healthy_threshold or 1,
        network_mode=parse_network_mode(pb.network_mode),
        run_as_root=pb.run_as_root,
    )
    changes = ChangeSet(
        breaking=tuple(req.changes.breaking), features=tuple(req.changes.features),
        fixes=tuple(req.changes.fixes), internal=tuple(req.changes.internal),
    )
    return spec, changes, dict(req.metadata)


def unit_spec_to_pb(spec: UnitSpec) -> types_pb2.UnitSpec:
    """Everything a version runs, as published, with each secret's value redacted."""
    return types_pb2.UnitSpec(
        apartment=spec.apartment, unit=spec.unit, image=spec.image, command=list(spec.command),
        env=dict(spec.env), secret_env=redacted_secrets(spec.secret_env), port=spec.port,
        service_port=spec.service_port,
        health=health_to_pb(spec.health_check, spec.healthy_threshold, spec.warmup_s),
        resources=resources_to_pb(spec.resources), dependencies=list(spec.dependencies),
        state_mode=state_mode_to_pb(spec.state_mode),
        idle_timeout=duration_to_pb(spec.idle_timeout_s), run_as_root=spec.run_as_root,
        network_mode=spec.network_mode.value,
    )


def version_to_pb(record: VersionRecord, reach: Reach = everything) -> types_pb2.VersionInfo:
    """The version as published; of its resolved dependencies only those ``reach`` lets the
    caller see (coordinator/api/scope.py)."""
    tag, spec = record.tag, record.tag.spec
    spec_pb = unit_spec_to_pb(spec)
    ranges = {}
    for text in spec.dependencies:
        name, _, range_text = text.partition("@")
        qualified = name if "/" in name else f"{spec.apartment}/{name}"
        ranges[qualified] = range_text.strip()
    direct = (parse_dependency(text, spec.apartment).unit for text in spec.dependencies)
    resolved = visible_resolved(tag.dependencies, direct, reach)
    return types_pb2.VersionInfo(
        apartment=spec.apartment, unit=spec.unit, version=tag.version, spec=spec_pb,
        changes=types_pb2.ChangeSet(**{k: list(v) for k, v in record.changes.items()}),
        checksum=tag.checksum,
        resolved=[
            types_pb2.ResolvedDependency(unit=u, range=ranges.get(u, ""), version=v,
                                         required_by=tag.unit)
            for u, v in sorted(resolved.items())
        ],
        metadata=dict(tag.metadata), created_at=timestamp_to_pb(tag.created_at),
        image_id=spec.run_image, image_digest=spec.image_digest,
    )


def unit_to_pb(listing: UnitListing) -> types_pb2.UnitInfo:
    record = listing.unit
    return types_pb2.UnitInfo(
        apartment=record.apartment, unit=record.unit, state=record.state,
        stable_version=record.stable_version, latest_version=record.latest_version,
        instances=listing.instances, building=record.building, sticky=record.sticky,
        failing_versions=dict(record.failing_versions), paused_instances=listing.paused,
        collected_instances=listing.collected,
    )


def host_to_pb(listing: HostListing) -> types_pb2.HostInfo:
    host = listing.host
    return types_pb2.HostInfo(
        host_id=host.host_id, building=host.building, address=host.address,
        capacity=resources_to_pb(host.capacity), allocated=resources_to_pb(listing.allocated),
        labels=dict(host.labels), enforceable=list(host.enforceable), status=listing.status,
        last_seen=timestamp_to_pb(listing.last_seen), agent_version=host.agent_version,
        cordoned=host.cordoned, cordon_reason=host.cordon_reason,
    )


def instance_to_pb(listing: InstanceListing) -> types_pb2.InstanceStatus:
    record, observed = listing.record, listing.observed
    if observed is not None:
        pb = observed_to_pb(observed)
    else:
        pb = types_pb2.InstanceStatus(state=types_pb2.INSTANCE_STATE_UNSPECIFIED)
    if record is not None:
        pb.instance_id, pb.host_id = record.instance_id, record.host_id
        pb.apartment, pb.unit, pb.version = record.apartment, record.unit, record.version
        pb.slot = slot_to_pb(record.slot)
        pb.port = record.port
        if observed is None:
            pb.reason = "not reported yet"
        if record.collected and pb.state != types_pb2.INSTANCE_STATE_COLLECTED:
            pb.state = types_pb2.INSTANCE_STATE_COLLECTED
            pb.reason = "collected (idle): its host has not confirmed yet"
    elif observed is not None:
        pb.reason = "not desired on this host: being stopped"
    return pb


def event_to_pb(event: EventRecord) -> types_pb2.Event:
    return types_pb2.Event(
        sequence=event.sequence, type=event.type, time=timestamp_to_pb(event.time),
        apartment=event.apartment, unit=event.unit, version=event.version,
        host_id=event.host_id, instance_id=event.instance_id, message=event.message,
        details=dict(event.details),
    )


def resolved_to_pb(edge: ResolvedEdge) -> types_pb2.ResolvedDependency:
    return types_pb2.ResolvedDependency(unit=edge.unit, range=edge.range, version=edge.version,
                                        required_by=edge.required_by)
