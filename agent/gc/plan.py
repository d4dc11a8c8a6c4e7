"""Pure garbage-collection decisions: which instances are idle, which images to keep,
what to evict from disk. The executor in ``agent.gc`` acts on them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agent.instances.store import InstanceRecord
from common.lifecycle import InstanceState
from common.semantic_versions import version_order_key

__all__ = [
    "CacheItem",
    "IdleDecision",
    "images_to_keep",
    "plan_cache_eviction",
    "plan_idle_collection",
]

COLLECTABLE_STATES = frozenset({InstanceState.RUNNING, InstanceState.PAUSED,
                                InstanceState.READY})


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
                   in_use: Iterable[str]) -> set[str]:
    """Images of the ``keep`` latest versions of each unit, plus every image in use.

    ``history`` maps a unit key to {version: image} of the versions this host ran.
    """
    kept = set(in_use)
    for versions in history.values():
        ordered = sorted(versions, key=version_order_key, reverse=True)
        kept.update(versions[v] for v in ordered[:keep])
    return kept


@dataclass(frozen=True)
class CacheItem:
    """Something on disk the agent may delete: an image, a stopped container, a dump."""

    kind: str
    """"image", "container" or "dump"."""
    ref: str
    size: int
    created: float
    """Epoch seconds (age is measured from it)."""


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
