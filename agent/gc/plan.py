"""Pure garbage-collection decisions: which instances are idle, which images to keep,
what to evict from disk. The executor in ``agent.gc`` acts on them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass

from agent.instances.store import InstanceRecord
from agent.runtime.protocol import ImageInfo
from common.errors import InvalidArgument
from common.image_refs import parse_image_ref
from common.lifecycle import InstanceState
from common.semantic_versions import version_order_key

__all__ = [
    "CacheItem",
    "IdleDecision",
    "evictable_images",
    "images_to_keep",
    "normal_reference",
    "plan_cache_eviction",
    "plan_idle_collection",
]

COLLECTABLE_STATES = frozenset({InstanceState.RUNNING, InstanceState.READY})
"""Never a paused instance: an operator froze it to bring it back as it was."""


@dataclass(frozen=True)
class IdleDecision:
    instance_id: str
    collect: bool
    reason: str


def plan_idle_collection(
    records: Iterable[InstanceRecord],
    now: float,
    stable_versions: Mapping[tuple[str, str], str],
    last_activity: Callable[[InstanceRecord], float],
) -> list[IdleDecision]:
    """One decision per instance that declares an idle timeout.

    Never collected: an instance of its unit's stable version, one that saw a request or
    a state change within its idle timeout (it has traffic), one not up.
    """
    decisions: list[IdleDecision] = []
    for record in records:
        spec = record.spec
        if spec.idle_timeout <= 0:
            continue
        idle = now - last_activity(record)
        if record.lifecycle.state not in COLLECTABLE_STATES:
            decisions.append(IdleDecision(spec.instance_id, False,
                                          f"state {record.lifecycle.state.value}"))
        elif stable_versions.get((spec.apartment, spec.unit)) == spec.version:
            decisions.append(IdleDecision(spec.instance_id, False,
                                          f"{spec.version} is the stable version"))
        elif idle <= spec.idle_timeout:
            decisions.append(IdleDecision(spec.instance_id, False,
                                          f"active {idle:.0f} s ago"))
        else:
            decisions.append(IdleDecision(
                spec.instance_id, True,
                f"idle for {idle:.0f} s (threshold {spec.idle_timeout:g} s)"))
    return decisions


def images_to_keep(history: Mapping[str, Mapping[str, str]], keep: int,
                   in_use: Iterable[str],
                   protected: Mapping[str, Iterable[str]] | None = None) -> set[str]:
    """Images of the ``keep`` latest versions of each unit, of its protected versions (the
    stable and previous stable ones, as the coordinator names them: a fast rollback to
    them never needs a pull), plus every image in use.

    ``history`` maps a unit key (``apartment/unit``) to {version: image} of the versions this
    host ran; ``protected`` maps a unit key to versions. References are normalised
    (``normal_reference``).
    """
    kept = {normal_reference(ref) for ref in in_use}
    for unit, versions in history.items():
        ordered = sorted(versions, key=version_order_key, reverse=True)
        chosen = set(ordered[:keep]) | set((protected or {}).get(unit, ()))
        kept.update(normal_reference(versions[v]) for v in chosen if v in versions)
    return kept


def normal_reference(reference: str) -> str:
    """The name Docker lists a reference under: ``NAME:latest`` for a bare ``NAME``."""
    try:
        parsed = parse_image_ref(reference)
    except InvalidArgument:
        return reference
    return reference if parsed.tag or parsed.digest else f"{reference}:latest"


def evictable_images(images: Iterable[ImageInfo], known: Set[str], keep: Set[str],
                     in_use_ids: Set[str]) -> list[CacheItem]:
    """Landlord's images, and names of them, that may go; oldest first.

    An image is Landlord's when one of its references (tags or digest references) is an
    image a version ran here (``known``). One a container uses (``in_use_ids``: image ids)
    is left alone. One with a kept reference stays: only its known names that nothing keeps
    are dropped (one item each, size 0: that frees no disk). Any other is removed whole: one
    item with all its known references (other names it has are not ours).
    """
    out = []
    for image in images:
        names = image.references
        ours = tuple(sorted(r for r in names if r in known))
        if not ours or image.id in in_use_ids:
            continue
        if any(r in keep for r in names):
            out += [CacheItem("image", r, 0, image.created, (r,)) for r in ours if r not in keep]
        else:
            out.append(CacheItem("image", ours[0], image.size, image.created, ours))
    return sorted(out, key=lambda i: (i.created, i.ref))


@dataclass(frozen=True)
class CacheItem:
    """Something on disk the agent may delete: an image, a stopped container, a dump."""

    kind: str
    """"image", "container" or "dump"."""
    ref: str
    size: int
    created: float
    """Epoch seconds (age is measured from it)."""
    refs: tuple[str, ...] = ()
    """Images: every reference to remove (``ref`` is the first)."""


def plan_cache_eviction(
    items: Iterable[CacheItem],
    now: float,
    used_bytes: int,
    total_bytes: int,
    high: float,
    low: float,
    max_age: Mapping[str, float],
) -> list[CacheItem]:
    """Everything older than its kind's max age; and, when the disk is fuller than
    ``high``, the oldest of the rest (dumps, then containers, then images at equal age)
    until the disk would be down to ``low``."""
    pool = list(items)
    chosen = [i for i in pool if i.kind in max_age and now - i.created > max_age[i.kind]]
    projected = used_bytes - sum(i.size for i in chosen)
    if total_bytes <= 0 or used_bytes / total_bytes <= high:
        return chosen
    order = {"dump": 0, "container": 1, "image": 2}
    rest = sorted((i for i in pool if i not in chosen),
                  key=lambda i: (i.created, order.get(i.kind, 3)))
    for item in rest:
        if projected / total_bytes <= low:
            break
        chosen.append(item)
        projected -= item.size
    return chosen
