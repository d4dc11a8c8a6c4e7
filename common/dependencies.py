"""Dependency specs (``name@range``) and their resolution to one version per unit.

Ranges have npm semantics (``^``, ``~``, x-ranges, hyphen ranges, ``||``, comparators), as
implemented by ``semantic_version.NpmSpec``: a pre-release version satisfies a range only
when the range names a pre-release of the same major.minor.patch (``^1.2.0-rc.1`` admits
``1.2.0-rc.2``, ``^1.2.0`` admits no pre-release).

Unit names are ``apartment/unit`` or a bare ``unit``, which means the requirer's own
apartment. A catalog maps each unit (qualified, or bare for the default apartment) to its
published versions and each version's dependency specs.

Resolution is a complete depth-first search that tries every unit's versions from the
highest down, so the result is the highest assignment in decision order; in particular no
single unit could take a higher version with the others unchanged. Every unit reachable
from the root gets exactly one version that satisfies every range on it, and the graph of
the chosen versions has no cycle. When no such assignment exists the error is the first
dead end met, which lies on the all-highest path: a unit that is not published, a range no
version satisfies (naming the versions that exist), two requirers whose ranges conflict
(naming both), or a cycle (naming it whole, ``a -> b -> c -> a``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.errors import (
    CircularDependency,
    DependencyResolutionError,
    InvalidArgument,
    LandlordError,
)
from common.input_bounds import quoted
from common.semantic_versions import check_range, parse_version, satisfies

__all__ = [
    "MAX_ATTEMPTS",
    "NAME_PATTERN",
    "Catalog",
    "DependencySpec",
    "parse_dependency",
    "qualify",
    "resolve",
]

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?\Z")
NAME_RULE = "1-63 lowercase letters, digits, '.', '_' or '-', starting and ending alphanumeric"
MAX_ATTEMPTS = 20_000
"""Candidate versions tried before resolution gives up (the search is exponential at worst)."""

Catalog = Mapping[str, Mapping[str, Sequence[str]]]
"""unit -> version -> the dependency specs of that version."""

ROOT = "the request"


@dataclass(frozen=True)
class DependencySpec:
    """One ``apartment/unit@range`` requirement, its unit qualified by apartment."""

    unit: str
    range: str

    def __str__(self) -> str:
        return f"{self.unit}@{self.range}"


def qualify(name: str, apartment: str) -> str:
    """``apartment/unit`` for a bare or qualified unit name, validating both parts."""
    if not isinstance(name, str) or not isinstance(apartment, str):
        raise InvalidArgument(f"unit name {quoted(name)} must be a string", unit=quoted(name))
    parts = name.split("/")
    if len(parts) == 1:
        parts = [apartment, name]
    if len(parts) != 2 or not all(NAME_PATTERN.fullmatch(part) for part in parts):
        raise InvalidArgument(
            f"unit name {quoted(name)} is not valid; write unit or apartment/unit, each "
            f"{NAME_RULE}",
            unit=quoted(name),
        )
    return "/".join(parts)


def parse_dependency(text: str, apartment: str) -> DependencySpec:
    """``name@range`` with ``name`` as ``unit`` (in ``apartment``) or ``apartment/unit``."""
    if not isinstance(text, str) or text.count("@") != 1:
        raise InvalidArgument(
            f"dependency {quoted(text)} is not name@range; write e.g. db@^1.2.0 or "
            "shared/cache@~2.1",
            dependency=quoted(text),
        )
    name, range_text = (part.strip() for part in text.split("@"))
    if not range_text:
        raise InvalidArgument(
            f"dependency {quoted(text)} has no version range; use {quoted(name)}@* for any "
            "version",
            dependency=quoted(text),
        )
    check_range(range_text)
    return DependencySpec(qualify(name, apartment), range_text)


def resolve(
    requirements: Sequence[str],
    catalog: Catalog,
    apartment: str,
    requirer: str = ROOT,
) -> dict[str, str]:
    """Pick one version for every unit reachable from ``requirements`` (see module doc).

    ``requirer`` is the qualified name of the unit whose dependencies these are; a path
    back to it is a cycle. Returns qualified unit name -> version.
    """
    if isinstance(requirements, str):
        raise InvalidArgument("requirements must be a list of name@range specs, not one string")
    units = _normalise(catalog, apartment)
    root_edges = tuple(parse_dependency(text, apartment) for text in requirements)
    search = _Search(units, requirer)
    found = search.run(root_edges)
    if found is None:
        assert search.first_failure is not None
        raise search.first_failure
    return found


@dataclass(frozen=True)
class _Published:
    version: str
    edges: tuple[DependencySpec, ...]


def _normalise(catalog: Catalog, apartment: str) -> dict[str, list[_Published]]:
    """Qualified unit -> its versions, highest first, with parsed dependency specs."""
    if not isinstance(catalog, Mapping):
        raise InvalidArgument("the catalog must map unit names to their versions")
    units: dict[str, list[_Published]] = {}
    for name, versions in catalog.items():
        unit = qualify(name, apartment)
        if not isinstance(versions, Mapping) or not all(
            isinstance(specs, list | tuple) for specs in versions.values()
        ):
            raise InvalidArgument(
                f"catalog entry {name!r} must map each version to a list of dependency specs",
                unit=name,
            )
        owner = unit.split("/")[0]
        entries = []
        for version, specs in versions.items():
            parse_version(version)
            entries.append(
                _Published(version, tuple(parse_dependency(spec, owner) for spec in specs))
            )
        units.setdefault(unit, []).extend(entries)
    for entries in units.values():  # "db" and "shop/db" may both name one unit
        entries.sort(key=lambda p: parse_version(p.version), reverse=True)
    return units


class _Search:
    """Depth-first search over versions, highest first, remembering the first dead end."""

    def __init__(self, units: dict[str, list[_Published]], root: str) -> None:
        self.units = units
        self.root = root
        self.first_failure: LandlordError | None = None
        self.attempts = 0

    def fail(self, error: LandlordError) -> None:
        if self.first_failure is None:
            self.first_failure = error

    def run(self, root_edges: tuple[DependencySpec, ...]) -> dict[str, str] | None:
        incoming: dict[str, tuple[tuple[str, str], ...]] = {}
        for edge in root_edges:
            if edge.unit == self.root:
                self.fail(_cycle_error([self.root, self.root]))
                return None
            incoming[edge.unit] = (*incoming.get(edge.unit, ()), (self.root, edge.range))
        order = tuple(dict.fromkeys(edge.unit for edge in root_edges))
        graph = {self.root: tuple(edge.unit for edge in root_edges)}
        return self.step({}, incoming, order, graph)

    def step(
        self,
        chosen: dict[str, str],
        incoming: dict[str, tuple[tuple[str, str], ...]],
        pending: tuple[str, ...],
        graph: dict[str, tuple[str, ...]],
    ) -> dict[str, str] | None:
        if not pending:
            return dict(chosen)
        unit, rest = pending[0], pending[1:]
        ranges = incoming[unit]
        published = self.units.get(unit, [])
        candidates = [p for p in published if all(satisfies(p.version, r) for _, r in ranges)]
        if not candidates:
            self.fail(_no_version_error(unit, ranges, published, chosen))
            return None
        for candidate in candidates:
            self.attempts += 1
            if self.attempts > MAX_ATTEMPTS:
                self.fail(
                    DependencyResolutionError(
                        f"dependency resolution gave up after {MAX_ATTEMPTS} attempts", unit=unit
                    )
                )
                return None
            found = self.try_candidate(unit, candidate, chosen, incoming, rest, graph)
            if found is not None:
                return found
        return None

    def try_candidate(
        self,
        unit: str,
        candidate: _Published,
        chosen: dict[str, str],
        incoming: dict[str, tuple[tuple[str, str], ...]],
        rest: tuple[str, ...],
        graph: dict[str, tuple[str, ...]],
    ) -> dict[str, str] | None:
        label = f"{unit} {candidate.version}"
        graph = {**graph, unit: tuple(edge.unit for edge in candidate.edges)}
        cycle = _find_cycle(graph, unit)
        if cycle is not None:
            # name the cycle from the node met first, as a person reads it from the root
            rank = {name: i for i, name in enumerate([self.root, *chosen, unit])}
            start = min(range(len(cycle) - 1), key=lambda i: rank.get(cycle[i], len(rank)))
            self.fail(_cycle_error([*cycle[start:-1], *cycle[:start], cycle[start]]))
            return None
        incoming = dict(incoming)
        for edge in candidate.edges:
            held = chosen.get(edge.unit)
            if held is not None and not satisfies(held, edge.range):
                requirers = ", ".join(f"{who} requires {r}" for who, r in incoming[edge.unit])
                self.fail(
                    DependencyResolutionError(
                        f"conflicting requirements for {edge.unit}: {requirers}, "
                        f"but {label} requires {edge.range}",
                        unit=edge.unit,
                        requirers=[*(who for who, _ in incoming[edge.unit]), label],
                    )
                )
                return None
            incoming[edge.unit] = (*incoming.get(edge.unit, ()), (label, edge.range))
        new_units = tuple(
            u
            for u in dict.fromkeys(e.unit for e in candidate.edges)
            if u not in chosen and u not in rest and u != unit
        )
        return self.step({**chosen, unit: candidate.version}, incoming, rest + new_units, graph)


def _find_cycle(graph: Mapping[str, tuple[str, ...]], start: str) -> list[str] | None:
    """A path start -> ... -> start through ``graph`` if one exists (all edges so far)."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt not in visited:
                visited.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def _cycle_error(cycle: list[str]) -> CircularDependency:
    text = " -> ".join(cycle)
    return CircularDependency(f"circular dependency: {text}", cycle=cycle)


def _no_version_error(
    unit: str,
    ranges: tuple[tuple[str, str], ...],
    published: list[_Published],
    chosen: dict[str, str],
) -> DependencyResolutionError:
    existing = ", ".join(p.version for p in reversed(published)) or "none"
    requirers = [who for who, _ in ranges]
    if not published:
        who, wanted = ranges[0]
        return DependencyResolutionError(
            f"{unit} is not published; {who} requires {unit}@{wanted} (versions: none)",
            unit=unit,
            range=wanted,
            versions=[],
            requirers=requirers,
        )
    alone = [r for _, r in ranges if not any(satisfies(p.version, r) for p in published)]
    if alone or len(ranges) == 1:
        wanted = alone[0] if alone else ranges[0][1]
        who = next(w for w, r in ranges if r == wanted)
        return DependencyResolutionError(
            f"no version of {unit} satisfies {wanted} (required by {who}); versions: {existing}",
            unit=unit,
            range=wanted,
            versions=[p.version for p in reversed(published)],
            requirers=[who],
        )
    described = ", ".join(f"{who} requires {r}" for who, r in ranges)
    return DependencyResolutionError(
        f"conflicting requirements for {unit}: {described}; no version satisfies all "
        f"(versions: {existing})",
        unit=unit,
        ranges=[r for _, r in ranges],
        versions=[p.version for p in reversed(published)],
        requirers=requirers,
    )
