"""Semantic versions of units: bump rules, immutable version tags, and publish planning.

Rules (these are what ``plan_publish`` enforces):

1. A version is strict SemVer 2.0.0: ``MAJOR.MINOR.PATCH`` with an optional
   ``-pre.release`` and ``+build`` part; no leading ``v``, no leading zeros.
2. Order is SemVer precedence: a pre-release sorts below its release
   (``2.0.0-rc.1 < 2.0.0``) and build metadata is ignored.
3. Release lines: a new version must have higher precedence than every published version
   (pre-releases included) of its own line. Its line is its ``MAJOR.MINOR`` when a version
   of that minor line is published (a patch, e.g. the backport ``1.2.1`` after ``2.0.0``),
   else its ``MAJOR`` when a version of that major is published (a minor bump: ``1.4.0``
   must exceed every ``1.x``), else it opens a new major, which must exceed every published
   version (``1.0.0`` cannot follow ``2.0.0``).
4. Build metadata never makes a new version: ``1.2.3+b2`` when ``1.2.3+b1`` is published
   is refused as ``VersionExists``.
5. The required bump comes from the change set: any breaking change -> major, else any
   feature -> minor, else any fix or internal change -> patch, else none.
6. The actual bump is measured from the highest published *release* (not pre-release)
   below the new version, which is the highest release of its line when the line has one,
   to the new version's ``MAJOR.MINOR.PATCH``, so a pre-release claims the bump of the release
   it leads to (``1.4.0`` -> ``2.0.0-rc.1`` is major, and so is ``2.0.0-rc.2``). The first
   release of a unit counts as a major bump. Major version 0 has no special case. A bump
   smaller than required is refused: "Version bump too small. Required: X, Actual: Y".
7. A tag is immutable. Publishing the same version string with the same content again
   returns the existing tag (idempotent); with different content it is ``VersionExists``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType

from common.dependencies import Catalog, resolve
from common.errors import (
    BumpTooSmall,
    FailedPrecondition,
    InvalidArgument,
    VersionExists,
)
from common.input_bounds import (
    MAX_CHANGE_BYTES,
    MAX_CHANGE_ENTRIES,
    check_length,
    check_metadata,
    check_text,
    quoted,
)
from common.semantic_versions import Version, parse_version
from common.unit_spec import UnitSpec

__all__ = [
    "Bump",
    "ChangeSet",
    "PublishDecision",
    "VersionTag",
    "actual_bump",
    "check_bump",
    "check_line_order",
    "parse_version",
    "plan_publish",
    "release_line",
    "required_bump",
]


class Bump(IntEnum):
    """Size of a version change, ordered so a bigger bump compares greater."""

    NONE = 0
    PATCH = 1
    MINOR = 2
    MAJOR = 3

    @property
    def word(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ChangeSet:
    """What changed since the previous version, each entry a short description."""

    breaking: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    internal: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for kind in ("breaking", "features", "fixes", "internal"):
            entries = getattr(self, kind)
            check_length(f"changes.{kind}", entries, MAX_CHANGE_ENTRIES)
            object.__setattr__(self, kind, tuple(entries))
            for entry in entries:
                if not isinstance(entry, str):
                    raise InvalidArgument(f"changes.{kind} must be a list of strings",
                                          field=kind)
                check_text(f"changes.{kind} entry", entry, MAX_CHANGE_BYTES)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ChangeSet:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"changes must be a JSON object, got {quoted(data)}")
        known = ("breaking", "features", "fixes", "internal")
        unknown = sorted(str(key) for key in set(data) - set(known))
        if unknown:
            raise InvalidArgument(
                f"unknown change kind(s) {quoted(', '.join(unknown))}; known: "
                f"{', '.join(known)}",
                field=quoted(unknown[0]),
            )
        parts: dict[str, tuple[str, ...]] = {}
        for key in known:
            entries = data.get(key, [])
            if not isinstance(entries, list | tuple) or not all(
                isinstance(e, str) for e in entries
            ):
                raise InvalidArgument(f"changes.{key} must be a list of strings", field=key)
            parts[key] = tuple(entries)
        return cls(**parts)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "breaking": list(self.breaking),
            "features": list(self.features),
            "fixes": list(self.fixes),
            "internal": list(self.internal),
        }


def required_bump(changes: ChangeSet) -> Bump:
    """Breaking -> major, features -> minor, fixes or internal -> patch, nothing -> none."""
    if changes.breaking:
        return Bump.MAJOR
    if changes.features:
        return Bump.MINOR
    if changes.fixes or changes.internal:
        return Bump.PATCH
    return Bump.NONE


def actual_bump(base: Version | None, new: Version) -> Bump:
    """The bump from release ``base`` (None: no release yet) to ``new``'s core version."""
    if base is None or new.major != base.major:
        return Bump.MAJOR if base is None or new.major > base.major else Bump.NONE
    if new.minor != base.minor:
        return Bump.MINOR if new.minor > base.minor else Bump.NONE
    return Bump.PATCH if new.patch > base.patch else Bump.NONE


def check_bump(base: Version | None, new: Version, changes: ChangeSet) -> Bump:
    """Raise ``BumpTooSmall`` when the actual bump is below the required one."""
    required, actual = required_bump(changes), actual_bump(base, new)
    if actual < required:
        raise BumpTooSmall(
            f"Version bump too small. Required: {required.word}, Actual: {actual.word}",
            required=required.word,
            actual=actual.word,
            version=str(new),
            base=None if base is None else str(base),
        )
    return actual


@dataclass(frozen=True)
class VersionTag:
    """An immutable published version of a unit."""

    unit: str
    """Qualified unit name, ``apartment/unit``."""
    version: str
    created_at: float
    """Epoch seconds of publication."""
    checksum: str
    """sha256 (hex) of the canonical JSON of the spec's content."""
    spec: UnitSpec
    dependencies: Mapping[str, str] = field(default_factory=dict)
    """Resolved dependencies at publication: qualified unit -> version."""
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "dependencies", MappingProxyType(dict(self.dependencies)))
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        check_metadata(self.metadata)

    def to_dict(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "version": self.version,
            "created_at": self.created_at,
            "checksum": self.checksum,
            "spec": self.spec.to_dict(),
            "dependencies": dict(self.dependencies),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> VersionTag:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a version tag must be a JSON object, got {data!r}")
        spec_data, deps, meta = data.get("spec"), data.get("dependencies"), data.get("metadata")
        created_at = data.get("created_at")
        if not isinstance(spec_data, Mapping):
            raise InvalidArgument("version tag needs a spec object", field="spec")
        for name, value in (("dependencies", deps), ("metadata", meta)):
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise InvalidArgument(f"version tag {name} must map strings to strings")
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise InvalidArgument("version tag created_at must be a number", field="created_at")
        spec = UnitSpec.from_dict(spec_data)
        assert isinstance(deps, Mapping) and isinstance(meta, Mapping)
        tag = cls(
            unit=spec.name,
            version=spec.version,
            created_at=float(created_at),
            checksum=spec.checksum(),
            spec=spec,
            dependencies=deps,
            metadata=meta,
        )
        if data.get("checksum") != tag.checksum or data.get("unit") != tag.unit:
            raise InvalidArgument(
                f"version tag for {tag.unit} {tag.version} does not match its spec "
                "(checksum or unit differs); the stored tag is corrupt",
                unit=tag.unit,
                version=tag.version,
            )
        return tag


def release_line(published: Sequence[Version], new: Version) -> tuple[str, list[Version]]:
    """The line ``new`` belongs to (rule 3) as a name and its published members:
    ``("1.2.x", ...)`` for a patch, ``("1.x", ...)`` for a minor bump, and for a new major
    ``("a new major", every published version)``."""
    minor_line = [v for v in published if (v.major, v.minor) == (new.major, new.minor)]
    if minor_line:
        return f"{new.major}.{new.minor}.x", minor_line
    major_line = [v for v in published if v.major == new.major]
    if major_line:
        return f"{new.major}.x", major_line
    return "a new major", list(published)


def check_line_order(unit: str, published: Sequence[Version], new: Version) -> None:
    """``FailedPrecondition`` unless ``new`` exceeds every published version of its line."""
    line, members = release_line(published, new)
    highest = max(members, default=None)
    if highest is None or new > highest:
        return
    where = ("a new major line must be greater than every published version"
             if line == "a new major"
             else f"it must be greater than every published {line} version")
    raise FailedPrecondition(
        f"{unit} {new} is refused: {where}; the highest published"
        f"{'' if line == 'a new major' else ' ' + line} is {highest}",
        unit=unit,
        version=str(new),
        highest=str(highest),
        line=line,
    )


@dataclass(frozen=True)
class PublishDecision:
    """What publishing a spec means: a new tag to store, or the existing identical one."""

    tag: VersionTag
    created: bool
    """False when this exact version and content were already published (idempotent)."""
    required: Bump
    actual: Bump


def plan_publish(
    existing_tags: Sequence[VersionTag],
    new_spec: UnitSpec,
    changes: ChangeSet,
    now: float,
    catalog: Catalog | None = None,
    metadata: Mapping[str, str] | None = None,
) -> PublishDecision:
    """Decide whether ``new_spec`` may be published (see the module rules); no I/O.

    ``existing_tags`` are the unit's published tags (tags of other units are ignored);
    ``catalog`` holds every published unit for resolving ``new_spec``'s dependencies.
    """
    unit = new_spec.name
    new = parse_version(new_spec.version)
    tags = [tag for tag in existing_tags if tag.unit == unit]
    checksum = new_spec.checksum()
    for tag in tags:
        if tag.version == new_spec.version:
            if tag.checksum == checksum:
                return PublishDecision(tag, False, required_bump(changes), Bump.NONE)
            raise VersionExists(
                f"{unit} {tag.version} is already published with different content "
                f"(checksum {tag.checksum[:12]}, new {checksum[:12]}); "
                "published versions are immutable, publish a new version",
                unit=unit,
                version=tag.version,
            )
        if parse_version(tag.version).compare(new) == 0:
            raise VersionExists(
                f"{unit} {new_spec.version} has the same precedence as published "
                f"{tag.version}; build metadata does not make a new version",
                unit=unit,
                version=new_spec.version,
            )
    versions = [parse_version(tag.version) for tag in tags]
    check_line_order(unit, versions, new)
    base = max((v for v in versions if not v.prerelease and v < new), default=None)
    actual = check_bump(base, new, changes)
    resolved: dict[str, str] = {}
    if new_spec.dependencies:
        resolved = resolve(new_spec.dependencies, catalog or {}, new_spec.apartment, unit)
    tag = VersionTag(
        unit=unit,
        version=new_spec.version,
        created_at=now,
        checksum=checksum,
        spec=new_spec,
        dependencies=resolved,
        metadata=dict(metadata or {}),
    )
    return PublishDecision(tag, True, required_bump(changes), actual)
