"""What an apartment-scoped caller is shown of the dependency graph (docs/security.md).

The authorization table (coordinator/api/authz.py) admits a scoped identity only for requests
that name one of its apartments, and every read answers for that apartment alone. One thing
still crosses the boundary: a version published by an unscoped admin may depend on a unit of
another apartment, and resolving it walks into that apartment's own dependencies. A scoped
caller sees the edges its apartments' units declare (``shop/web -> blog/db``: the unit it
deploys needs it), never the edges inside apartments it does not reach
(``blog/db -> blog/cache``).

The caller is the identity the authz interceptor admitted for the current call; without one
(plain text on loopback, no interceptor) everything is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from coordinator.api.authz_interceptor import caller_identity
from coordinator.registry import ResolvedEdge

__all__ = ["Reach", "caller_reach", "everything", "visible_edges", "visible_resolved"]

Reach = Callable[[str], bool]
"""True for an apartment the caller may see."""


def everything(apartment: str) -> bool:
    return True


def caller_reach() -> Reach:
    """The apartments the current call's caller may see (all without an admitted identity)."""
    caller = caller_identity()
    return caller.reaches if caller is not None else everything


def _apartment(qualified: str) -> str:
    return qualified.partition("/")[0]


def visible_edges(edges: Iterable[ResolvedEdge], reach: Reach) -> list[ResolvedEdge]:
    """The edges whose requirer lies in an apartment the caller reaches."""
    return [e for e in edges if reach(_apartment(e.required_by))]


def visible_resolved(resolved: Mapping[str, str], direct: Iterable[str], reach: Reach
                     ) -> dict[str, str]:
    """A version's resolved dependencies (qualified unit -> version, transitive) as the caller
    may see them: the ones the version names itself (``direct``), and those in apartments the
    caller reaches."""
    named = set(direct)
    return {unit: version for unit, version in resolved.items()
            if unit in named or reach(_apartment(unit))}
