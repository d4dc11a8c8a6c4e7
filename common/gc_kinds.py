"""The kinds of garbage collection an agent runs (plan section 6.7), defined once.

The CLI offers them, the admin API and the agent stream carry them (proto ``GcKind``,
converted at each edge), and the agent runs them: one name for each on every side.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from common.errors import InvalidArgument

__all__ = ["GcKind", "parse_gc_kinds"]


class GcKind(StrEnum):
    """One garbage collection an agent can run now or on its schedule."""

    UNUSED = "unused"
    """Instances idle past their unit's idle timeout (never the stable version), removed
    safely: state backed up, graceful stop, resources freed, metadata cleaned."""
    MEMORY = "memory"
    """Page cache of idle instances and of instances under memory pressure reclaimed."""
    CACHE = "cache"
    """Old dumps, stopped containers and, above the disk watermark, old images evicted."""


def parse_gc_kinds(names: Iterable[str], field: str = "kinds") -> tuple[GcKind, ...]:
    """The kinds named by ``names`` (in order, without repeats); InvalidArgument naming
    the first unknown one and every known one."""
    kinds: list[GcKind] = []
    for name in names:
        try:
            kind = GcKind(name)
        except ValueError:
            known = ", ".join(GcKind)
            raise InvalidArgument(f"{field}: {name!r} is not one of {known}",
                                  field=field) from None
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)
