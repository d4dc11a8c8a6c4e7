"""Units and versions: publish (leader), list, show, versions and dependency resolution.

Publishing first pins the image: a reference naming a registry is resolved to its digest
through that registry (``coordinator/images_client.py``, before any write), and the version
records the digest, so agents run ``NAME@DIGEST`` whatever the tag names later; a bare
local name is checked against what agents reported they have. It then decides with
``common.versions.plan_publish`` (bump rules, immutable tags, dependency resolution) and
writes the version, the unit record and the ``version.created`` event in one transaction
guarded by revisions. Reads come from the watch-fed cache, so followers answer them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from common.clock import Clock
from common.dependencies import Catalog, parse_dependency, resolve
from common.errors import (
    FailedPrecondition,
    InvalidArgument,
    LandlordError,
    NotFound,
    VersionExists,
)
from common.image_refs import ImageRef, parse_image_ref
from common.unit_spec import UnitSpec
from common.versions import ChangeSet, plan_publish
from coordinator.images_client import RegistryClient
from coordinator.state.cluster_state import ClusterState
from coordinator.state.events import EventLog, encode_event
from coordinator.state.fenced_writes import FencedWrites
from coordinator.state.keys import KeyLayout
from coordinator.state.records import UnitRecord, VersionRecord, encode
from coordinator.state.store import Txn

__all__ = ["Registry", "ResolvedEdge"]


@dataclass(frozen=True)
class ResolvedEdge:
    unit: str
    range: str
    version: str
    required_by: str


class ReportedImages(Protocol):
    """Images connected agents reported, by host (coordinator/fleet/sessions.py)."""

    @property
    def images(self) -> Mapping[str, frozenset[str]]: ...


class ImageResolver(Protocol):
    """Resolves a registry reference to the digest it names now (``RegistryClient``)."""

    async def resolve(self, ref: ImageRef) -> str: ...


class Registry:
    def __init__(self, *, state: ClusterState, layout: KeyLayout, writes: FencedWrites,
                 events: EventLog, clock: Clock, reported: ReportedImages,
                 images: ImageResolver | None = None) -> None:
        self.state = state
        self.images: ImageResolver = images or RegistryClient()
        self.layout = layout
        self.writes = writes
        self.events = events
        self.clock = clock
        self.reported = reported

    # -- reads -----------------------------------------------------------------------------

    def catalog_for(self, dependencies: Sequence[str], apartment: str) -> Catalog:
        """The published units reachable from ``dependencies`` (all their versions, and what
        those depend on, transitively): all that resolving them can look at, without
        walking every unit of the cluster on each publish."""
        catalog: dict[str, dict[str, list[str]]] = {}
        todo = [(text, apartment) for text in dependencies]
        while todo:
            text, base = todo.pop()
            try:
                name = parse_dependency(text, base).unit
            except LandlordError:
                continue  # malformed: the resolver reports it with its context
            dep_apartment, _, dep_unit = name.partition("/")
            versions = self.state.versions.get((dep_apartment, dep_unit))
            if name in catalog or not versions:
                continue  # seen, or unknown (the resolver names what is missing)
            catalog[name] = {v: list(r.tag.spec.dependencies) for v, r in versions.items()}
            todo.extend((t, dep_apartment) for r in versions.values()
                        for t in r.tag.spec.dependencies)
        return catalog

    def units(self, apartment: str = "") -> list[UnitRecord]:
        keys = {k for k, v in self.state.versions.items() if v} | set(self.state.units)
        found = []
        for a, u in sorted(keys):
            if apartment and a != apartment:
                continue
            record = self.state.units.get((a, u))
            found.append(record.value if record else UnitRecord(a, u))
        return found

    def unit(self, apartment: str, unit: str) -> UnitRecord:
        _check_names(apartment, unit)
        record = self.state.units.get((apartment, unit))
        if record is None:
            if self.state.versions.get((apartment, unit)):
                return UnitRecord(apartment, unit)
            raise NotFound(f"unit {apartment}/{unit} does not exist", unit=unit)
        return record.value

    def versions(self, apartment: str, unit: str) -> list[VersionRecord]:
        self.unit(apartment, unit)
        found = self.state.versions.get((apartment, unit), {})
        return sorted(found.values(), key=lambda r: r.tag.created_at)

    def version(self, apartment: str, unit: str, version: str) -> VersionRecord:
        self.unit(apartment, unit)
        found = self.state.versions.get((apartment, unit), {}).get(version)
        if found is None:
            raise NotFound(f"{apartment}/{unit} has no version {version}", unit=unit,
                           version=version)
        return found

    def latest(self, apartment: str, unit: str) -> VersionRecord | None:
        record = self.state.units.get((apartment, unit))
        versions = self.state.versions.get((apartment, unit), {})
        if record and record.value.latest_version in versions:
            return versions[record.value.latest_version]
        return max(versions.values(), key=lambda r: r.tag.created_at, default=None)

    def resolve(self, apartment: str, unit: str, version: str) -> list[ResolvedEdge]:
        """Every dependency edge reachable from the version, with the versions chosen now."""
        record = self.version(apartment, unit, version)
        root = f"{apartment}/{unit}"
        spec = record.tag.spec
        if not spec.dependencies:
            return []
        chosen = resolve(spec.dependencies, self.catalog_for(spec.dependencies, apartment),
                         apartment, root)
        edges: list[ResolvedEdge] = []
        todo = [(root, version, spec.dependencies, apartment)]
        done: set[str] = set()
        while todo:
            requirer, _, deps, owner = todo.pop(0)
            if requirer in done:
                continue
            done.add(requirer)
            for text in deps:
                dep = parse_dependency(text, owner)
                picked = chosen[dep.unit]
                edges.append(ResolvedEdge(dep.unit, dep.range, picked, requirer))
                a, u = dep.unit.split("/")
                dep_record = self.state.versions.get((a, u), {}).get(picked)
                if dep_record is not None:
                    todo.append((dep.unit, picked, dep_record.tag.spec.dependencies, a))
        return edges

    # -- publishing ------------------------------------------------------------------------

    async def _pin_image(self, spec: UnitSpec) -> UnitSpec:
        """``spec`` with the digest its registry names for its image now; a bare local name
        is left as is (``_check_image`` looks for it on the hosts)."""
        ref = parse_image_ref(spec.image)
        if not ref.in_registry:
            return spec
        return replace(spec, image_digest=await self.images.resolve(ref))

    def _refuse_moved_tag(self, spec: UnitSpec) -> None:
        """The same version again whose tag now names another digest: say both digests
        (``plan_publish`` would only say the checksums differ)."""
        found = self.state.versions.get((spec.apartment, spec.unit), {}).get(spec.version)
        if found is None:
            return
        old = found.tag.spec
        if old.image == spec.image and old.image_digest != spec.image_digest and (
            replace(old, image_digest=spec.image_digest).checksum() == spec.checksum()
        ):
            raise VersionExists(
                f"{spec.name} {spec.version} is already published with {old.image} at "
                f"{old.image_digest or 'no digest'}; the registry now names "
                f"{spec.image_digest} for it. Published versions are immutable: publish a new "
                "version for the new image", unit=spec.unit, version=spec.version)

    def _check_image(self, spec: UnitSpec) -> None:
        if spec.image_digest:
            return  # resolved through its registry; agents pull it by digest
        # stops at the first host that has it (a list of every host per publish cost 3.5 %
        # of the leader's time at 5,000 hosts)
        hosts = (v.value for v in self.state.hosts.values() if v.value.status != "lost")
        if any(spec.image in host.images for host in hosts):
            return
        if any(spec.image in images for images in self.reported.images.values()):
            return
        checked = sum(1 for v in self.state.hosts.values() if v.value.status != "lost")
        raise FailedPrecondition(
            f"image {spec.image!r} is not present on any registered host "
            f"({checked} host(s) checked); load it on the hosts first",
            image=spec.image,
        )

    async def publish(
        self,
        spec: UnitSpec,
        changes: ChangeSet,
        metadata: Mapping[str, str],
    ) -> tuple[VersionRecord, bool]:
        """Publish ``spec``; returns the version record and whether it is new.

        The same version again with any difference in what runs (the spec's checksum) is
        refused as a different version (``VersionExists``, from ``plan_publish``)."""
        self.writes.require_lead()  # followers refuse writes up front
        key = (spec.apartment, spec.unit)
        spec = await self._pin_image(spec)
        self._refuse_moved_tag(spec)

        async def attempt() -> tuple[VersionRecord, bool]:
            existing = self.state.versions.get(key, {})
            catalog = self.catalog_for(spec.dependencies, spec.apartment)
            decision = plan_publish([r.tag for r in existing.values()], spec, changes,
                                    self.clock.now(), catalog, metadata)
            if not decision.created:
                return existing[spec.version], False
            self._check_image(spec)
            record = VersionRecord(tag=decision.tag, changes=changes.to_dict())
            unit = self.state.units.get(key)
            unit_record = replace(unit.value, latest_version=spec.version,
                                  updated_at=self.clock.now()) if unit else UnitRecord(
                spec.apartment, spec.unit, latest_version=spec.version,
                updated_at=self.clock.now())
            layout = self.layout
            event = self.events.make(
                "version.created",
                f"{spec.name} {spec.version} published ({decision.actual.word} bump)",
                apartment=spec.apartment, unit=spec.unit, version=spec.version,
                checksum=decision.tag.checksum,
            )
            txn = (
                Txn()
                .require(layout.version(*key, spec.version), 0)
                .put(layout.version(*key, spec.version), encode(record))
                .require(layout.unit(*key), unit.mod_revision if unit else 0)
                .put(layout.unit(*key), encode(unit_record))
                .put(self.events.key_for(event), encode_event(event))
            )
            await self.writes.commit(txn)
            return record, True

        return await self.writes.retry(attempt, f"publishing {spec.name} {spec.version}",
                                       unit=spec.unit, version=spec.version)


def _check_names(apartment: str, unit: str) -> None:
    if not apartment or not unit:
        raise InvalidArgument("apartment and unit are required", field="unit")
