"""The records the coordinator keeps in etcd (see coordinator/state/keys.py), as frozen dataclasses.

Each record turns into compact JSON with ``encode()`` and back with ``decode()``; unknown
fields are ignored on decode so a newer coordinator's records stay readable. Every record
carries its schema (``common.schema.RECORD_SCHEMA``); ``decode`` migrates an older one in
memory first (coordinator/state/migrations.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any, TypeVar

from common.resources import Resources
from common.versions import VersionTag
from coordinator.state.migrations import RECORDS, dumps

__all__ = [
    "Allocation",
    "EventRecord",
    "HostHealth",
    "HostRecord",
    "InstanceRecord",
    "LeaderRecord",
    "RouteRecord",
    "SchemaRecord",
    "StatusRecord",
    "UnitRecord",
    "VersionRecord",
    "decode",
    "encode",
]

R = TypeVar("R")


def encode(record: Any) -> bytes:
    """Compact JSON of a record dataclass (Resources become dicts), stamped with this
    release's record schema."""
    return dumps(RECORDS.stamp(_plain(record)))


def _plain(value: Any) -> Any:
    if isinstance(value, Resources):
        return value.to_dict()
    if isinstance(value, VersionTag):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def decode(cls: type[R], data: bytes) -> R:
    """The record of type ``cls`` from its JSON, migrated to this release's schema first
    (coordinator/state/migrations.py); see each class's ``from_dict``."""
    raw = json.loads(data)
    if isinstance(raw, dict):
        raw = RECORDS.migrate(_KINDS.get(cls, ""), raw)
    from_dict = getattr(cls, "from_dict", None)
    if from_dict is not None:
        return from_dict(raw)  # type: ignore[no-any-return]
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in raw.items() if k in names})


def _resources(raw: Any) -> Resources:
    return Resources(**raw) if isinstance(raw, dict) else Resources()


class HostHealth(StrEnum):
    """A host as the leader sees it; only ``alive`` and ``lost`` are persisted
    (HostRecord.status)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    """Silent or disconnected for less than the grace period: its instances stay put."""
    LOST = "lost"
    """Silent past the grace period: its instances are placed again elsewhere."""


@dataclass(frozen=True)
class SchemaRecord:
    """The cluster's record schema (``{p}/schema``) and the release that wrote it."""

    schema: int
    release: str = ""


@dataclass(frozen=True)
class ActiveRolloutRecord:
    """The unit's one active rollout (``{p}/active-rollout/{apartment}/{unit}``); not a
    versioned kind: created with the rollout, deleted when it ends."""

    rollout_id: str
    since: float = 0.0


@dataclass(frozen=True)
class LeaderRecord:
    id: str
    address: str


@dataclass(frozen=True)
class HostRecord:
    """A registered host (what its agent said) and its persisted liveness status."""

    host_id: str
    building: str
    address: str
    capacity: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    enforceable: tuple[str, ...] = ()
    agent_version: str = ""
    images: tuple[str, ...] = ()
    status: HostHealth = HostHealth.ALIVE
    """``alive`` or ``lost`` (``suspect`` lives only in the leader's memory)."""
    registered_at: float = 0.0
    status_changed_at: float = 0.0
    cordoned: bool = False
    """Set by an operator (``landlord hosts cordon``): nothing new is placed here. Records
    without it (written before cordons existed) are schedulable; a registration never
    changes it (``keeping_cordon``)."""
    cordon_reason: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HostRecord:
        return cls(
            host_id=raw["host_id"],
            building=raw.get("building", ""),
            address=raw.get("address", ""),
            capacity=_resources(raw.get("capacity")),
            labels=dict(raw.get("labels", {})),
            enforceable=tuple(raw.get("enforceable", ())),
            agent_version=raw.get("agent_version", ""),
            images=tuple(raw.get("images", ())),
            status=HostHealth(raw.get("status", HostHealth.ALIVE)),
            registered_at=float(raw.get("registered_at", 0.0)),
            status_changed_at=float(raw.get("status_changed_at", 0.0)),
            cordoned=bool(raw.get("cordoned", False)),
            cordon_reason=str(raw.get("cordon_reason", "")),
        )

    def keeping_cordon(self, stored: HostRecord | None) -> HostRecord:
        """This record (a registration) with the cordon of the ``stored`` one: the cordon
        is the operator's, so an agent registering again never lifts or sets it."""
        if stored is None:
            return replace(self, cordoned=False, cordon_reason="")
        return replace(self, cordoned=stored.cordoned, cordon_reason=stored.cordon_reason)

    def same_registration(self, other: HostRecord) -> bool:
        """Equal apart from timestamps and the cordon (which registration never changes):
        re-registering this changes nothing in etcd."""
        skip = {"registered_at", "status_changed_at", "cordoned", "cordon_reason"}
        names = [f.name for f in fields(self) if f.name not in skip]
        return all(getattr(self, name) == getattr(other, name) for name in names)


@dataclass(frozen=True)
class Allocation:
    """What one instance holds on a host."""

    resources: Resources
    port: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.resources.to_dict(), "port": self.port}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Allocation:
        parts = {k: raw[k] for k in ("cpu", "memory", "storage", "network") if k in raw}
        return cls(Resources(**parts), int(raw.get("port", 0)))


def encode_allocations(allocations: Mapping[str, Allocation]) -> bytes:
    payload = {iid: a.to_dict() for iid, a in sorted(allocations.items())}
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_allocations(data: bytes) -> dict[str, Allocation]:
    return {iid: Allocation.from_dict(raw) for iid, raw in json.loads(data).items()}


@dataclass(frozen=True)
class InstanceRecord:
    """A desired instance: one unit version in a slot on one host."""

    instance_id: str
    apartment: str
    unit: str
    version: str
    slot: str
    host_id: str
    port: int
    resources: Resources
    created_at: float
    replaces: str = ""
    """The instance this one was placed to replace (a lost host's), if any."""
    after_escalation: str = ""
    """Why it was placed: the instance it replaces escalated (its agent could not heal it).
    Such a replacement is not re-placed again; if it escalates too, its version is marked
    failing for the unit (coordinator/fleet/escalations.py)."""
    paused: bool = False
    """An operator paused it (issue 17): out of every route, its container frozen, its
    capacity still held; hosts and new leaders keep it so until it is resumed."""
    collected_at: float = 0.0
    """When idle collection scaled it to zero (0: not collected). A collected instance keeps
    its host, port and allocation (a wake is a start on the same host, where its state
    backup is, and never waits for room); nothing starts it again until a wake
    (coordinator/fleet/idle_units.py)."""

    @property
    def collected(self) -> bool:
        return self.collected_at > 0

    @property
    def unit_key(self) -> tuple[str, str]:
        return self.apartment, self.unit

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> InstanceRecord:
        values = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
        values["resources"] = _resources(raw.get("resources"))
        return cls(**values)


@dataclass(frozen=True)
class StatusRecord:
    """The last observed state of an instance, as persisted on a state change."""

    instance_id: str
    host_id: str
    state: str
    healthy: bool
    restarts: int = 0
    reason: str = ""
    changed_at: float = 0.0


@dataclass(frozen=True)
class UnitRecord:
    apartment: str
    unit: str
    state: str = "idle"
    stable_version: str = ""
    latest_version: str = ""
    building: str = ""
    replicas: int = 0
    updated_at: float = 0.0
    sticky: bool = False
    """Deploys that do not say are sticky canaries (the last deploy's explicit choice)."""
    failing_versions: Mapping[str, str] = field(default_factory=dict)
    """version -> why it is marked failing for this unit: an instance of it escalated, was
    re-placed on another host and escalated again; its instances are not re-placed again.
    A deploy that makes the version stable again clears the mark."""


@dataclass(frozen=True)
class VersionRecord:
    """A published version: the immutable tag (whose spec holds everything that runs) and
    the change set it was published with."""

    tag: VersionTag
    changes: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def apartment(self) -> str:
        return self.tag.spec.apartment

    @property
    def unit(self) -> str:
        return self.tag.spec.unit

    @property
    def version(self) -> str:
        return self.tag.version

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> VersionRecord:
        return cls(
            tag=_fold_legacy_run_fields(VersionTag.from_dict(raw["tag"]), raw),
            changes={k: list(v) for k, v in raw.get("changes", {}).items()},
        )


def _fold_legacy_run_fields(tag: VersionTag, raw: Mapping[str, Any]) -> VersionTag:
    """Records written before the spec held them kept the service port, state mode, idle
    timeout, warm-up and healthy threshold beside the tag, and a placeholder spec port with
    ``port_assigned`` for "the port placement assigns". Fold them into the spec; the
    checksum is recomputed over what the version runs, so republishing the same content
    stays idempotent."""
    spec = tag.spec
    folded = replace(
        spec,
        port=0 if raw.get("port_assigned") else spec.port,
        service_port=int(raw.get("service_port", spec.service_port)),
        state_mode=raw.get("state_mode", spec.state_mode),
        idle_timeout_s=float(raw.get("idle_timeout_s", spec.idle_timeout_s)),
        warmup_s=float(raw.get("warmup_s", spec.warmup_s)),
        healthy_threshold=int(raw.get("healthy_threshold", spec.healthy_threshold)),
    )
    if folded == spec:
        return tag
    return replace(tag, spec=folded, checksum=folded.checksum())


@dataclass(frozen=True)
class RouteRecord:
    """The traffic split of a unit: version -> percent (summing to 100)."""

    apartment: str
    unit: str
    building: str
    service_port: int
    health_path: str
    split: Mapping[str, float]
    updated_at: float = 0.0
    sticky: bool = False
    """Clients stay on the version that served them (a sticky rollout's steps)."""


@dataclass(frozen=True)
class EventRecord:
    type: str
    time: float
    message: str = ""
    apartment: str = ""
    unit: str = ""
    version: str = ""
    host_id: str = ""
    instance_id: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    batch_index: int = 0
    """Position among the events written in the same transaction."""
    sequence: int = 0
    """Set when read, not stored: create revision x 1000 + batch_index (unique, ordered)."""

    def as_stored(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("sequence")
        return data


_KINDS: dict[type, str] = {
    HostRecord: "hosts", InstanceRecord: "instances", StatusRecord: "status",
    UnitRecord: "units", VersionRecord: "versions", RouteRecord: "routes",
    EventRecord: "events",
}
"""The key kind (``KeyLayout.kind_of``) of each record class, for its migrations."""
