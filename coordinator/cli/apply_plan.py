"""What `landlord apply` would change, from the declared version and what the cluster holds.

- The declared version is not published: publish it (listing how it differs from the
  latest published version), then deploy it.
- It is published with the same content (the checksum's fields: image, command, env,
  secret names, ports, health, resources, dependencies, ...): no publish.
- It is published with other content: refused. Versions are immutable; the file must
  declare a new version.
- The declared version is the unit's stable version with the declared number of instances
  running and no rollout active: nothing to deploy. Otherwise: deploy it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from common.errors import FailedPrecondition
from common.unit_spec import UnitSpec

__all__ = ["ApplyPlan", "Published", "UnitNow", "plan_apply", "spec_differences"]

ACTIVE_STATES = frozenset({"deploying", "rolling_out", "rolling_back"})


@dataclass(frozen=True)
class Published:
    spec: UnitSpec
    """As the API shows it: secret values redacted (the checksum covers only their names)."""
    image_digest: str


@dataclass(frozen=True)
class UnitNow:
    state: str
    stable_version: str
    running: dict[str, int]
    """Version -> instances not stopped."""


@dataclass(frozen=True)
class ApplyPlan:
    publish: bool
    deploy: bool
    lines: tuple[str, ...]
    """What would change, one sentence each, for people."""

    @property
    def changes_anything(self) -> bool:
        return self.publish or self.deploy


def spec_differences(old: UnitSpec, new: UnitSpec) -> list[str]:
    """The fields of the content that differ, ``name: old -> new`` (secret names only)."""
    before, after = old.content(), new.content()
    out = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            out.append(f"{key}: {_short(before.get(key))} -> {_short(after.get(key))}")
    return out


def _short(value: object) -> str:
    text = "(none)" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plan_apply(desired: UnitSpec, replicas: int, strategy: str,
               published: dict[str, Published], latest: str, now: UnitNow | None) -> ApplyPlan:
    """The plan for ``desired`` (its version included) with ``replicas`` instances.
    ``published``: the unit's versions; ``latest``: the newest of them ("" when none);
    ``now``: the unit's deploy state (None when it was never deployed). Raises
    FailedPrecondition when the version is published with other content."""
    lines: list[str] = []
    ref = f"{desired.name} {desired.version}"
    found = published.get(desired.version)
    if found is not None:
        differences = spec_differences(  # the file names a tag; publish pinned its digest
            replace(found.spec, image_digest=found.image_digest),
            replace(desired, image_digest=found.image_digest))
        if differences:
            raise FailedPrecondition(
                f"{ref} is already published with other content ({'; '.join(differences)}): "
                "versions are immutable, declare a new version", unit=desired.name)
        lines.append(f"{ref} is published with this content: nothing to publish")
    else:
        lines.append(f"publish {ref}")
        if latest and latest in published:
            base = replace(published[latest].spec, image_digest="")
            lines.extend(f"  {d}" for d in spec_differences(base, desired) if d)
            lines.append(f"  (compared with {latest}, the latest published version)")
    deploy = True
    if found is not None and now is not None and now.stable_version == desired.version \
            and now.state not in ACTIVE_STATES \
            and now.running.get(desired.version, 0) == replicas:
        deploy = False
        lines.append(f"{ref} is the stable version with {replicas} instance(s) running: "
                     "nothing to deploy")
    elif now is not None and now.state in ACTIVE_STATES:
        raise FailedPrecondition(
            f"{desired.name} has a rollout in progress ({now.state}): wait for it to end, or "
            "abort it with `landlord rollout abort`, then apply again", unit=desired.name)
    else:
        stable = now.stable_version if now is not None and now.stable_version else ""
        replacing = f", replacing {stable}" if stable and stable != desired.version else ""
        lines.append(f"deploy {ref}: {replicas} instance(s) by {strategy}{replacing}")
    return ApplyPlan(publish=found is None, deploy=deploy, lines=tuple(lines))
