"""Dependency specs and resolution: highest, transitive, one version per unit, or an error."""

from __future__ import annotations

from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.dependencies import (
    Catalog,
    DependencySpec,
    parse_dependency,
    qualify,
    resolve,
)
from common.errors import (
    CircularDependency,
    DependencyResolutionError,
    InvalidArgument,
    InvalidVersion,
)
from common.semantic_versions import parse_version, satisfies


def test_parse_dependency_qualifies_bare_names() -> None:
    assert parse_dependency("db@^1.2.0", "shop") == DependencySpec("shop/db", "^1.2.0")
    assert parse_dependency("shared/cache@~2.1", "shop") == DependencySpec("shared/cache", "~2.1")
    assert str(parse_dependency("db@*", "shop")) == "shop/db@*"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("db", "name@range"),
        ("db@1@2", "name@range"),
        ("db@", "no version range"),
        ("db@latest", "not an npm range"),
        ("Db@1", "unit name"),
        ("a/b/c@1", "unit name"),
        ("/db@1", "unit name"),
        ("-db@1", "unit name"),
    ],
)
def test_bad_dependency_specs(text: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_dependency(text, "shop")


def test_qualify() -> None:
    assert qualify("web", "shop") == "shop/web"
    assert qualify("other/web", "shop") == "other/web"
    with pytest.raises(InvalidArgument, match="apartment/unit"):
        qualify("web", "Bad Apartment")


@pytest.mark.parametrize(
    ("version", "range_text", "expected"),
    [
        ("1.9.9", "^1.2.3", True),
        ("2.0.0", "^1.2.3", False),
        ("1.2.9", "~1.2", True),
        ("1.3.0", "~1.2", False),
        ("1.7.0", "1.x", True),
        ("2.3.4", "1.2.3 - 2.3.4", True),
        ("2.3.5", "1.2.3 - 2.3.4", False),
        ("3.1.0", ">=1.0.0 <2.0.0 || ^3", True),
        ("2.5.0", ">=1.0.0 <2.0.0 || ^3", False),
        ("0.2.5", "^0.2.3", True),
        ("0.3.0", "^0.2.3", False),
        # pre-releases only when the range names one of the same major.minor.patch
        ("1.3.0-beta.1", "^1.2.0", False),
        ("1.2.0-rc.2", "^1.2.0-rc.1", True),
        ("1.3.0-rc.1", "^1.2.0-rc.1", False),
        ("1.2.0-rc.1", "*", False),
        ("1.2.0+build.5", "^1.0.0", True),
    ],
)
def test_npm_range_semantics(version: str, range_text: str, expected: bool) -> None:
    assert satisfies(version, range_text) is expected


def test_parse_version_is_strict() -> None:
    assert str(parse_version("2.0.0-rc.1+b7")) == "2.0.0-rc.1+b7"
    with pytest.raises(InvalidVersion, match="drop the leading 'v'"):
        parse_version("v1.2.3")
    for bad in ("1.2", "01.2.3", "1.2.3-01", "", "latest"):
        with pytest.raises(InvalidVersion, match=r"MAJOR\.MINOR\.PATCH"):
            parse_version(bad)


CATALOG: Catalog = {
    "web": {"1.0.0": ["db@^1", "cache@~2.1"], "1.1.0": ["db@^1.2", "cache@~2.1"]},
    "db": {"1.0.0": [], "1.2.0": [], "1.5.0": [], "2.0.0": []},
    "cache": {"2.1.0": ["shared/log@1.x"], "2.1.4": ["shared/log@1.x"], "2.2.0": []},
    "shared/log": {"1.0.0": [], "1.3.0": [], "2.0.0": []},
}


def test_resolution_is_transitive_and_picks_the_highest() -> None:
    assert resolve(["web@^1"], CATALOG, "shop") == {
        "shop/web": "1.1.0",
        "shop/db": "1.5.0",
        "shop/cache": "2.1.4",
        "shared/log": "1.3.0",
    }


def test_no_requirements_resolve_to_nothing() -> None:
    assert resolve([], CATALOG, "shop") == {}


def test_a_missing_version_names_unit_range_and_versions() -> None:
    with pytest.raises(DependencyResolutionError) as caught:
        resolve(["db@^3"], CATALOG, "shop", requirer="shop/api")
    assert str(caught.value) == (
        "no version of shop/db satisfies ^3 (required by shop/api); "
        "versions: 1.0.0, 1.2.0, 1.5.0, 2.0.0"
    )
    assert caught.value.context["versions"] == ["1.0.0", "1.2.0", "1.5.0", "2.0.0"]


def test_an_unpublished_unit_is_named() -> None:
    with pytest.raises(DependencyResolutionError, match=r"shop/queue is not published.*none"):
        resolve(["queue@^1"], CATALOG, "shop")


def test_conflicting_requirements_name_both_requirers_and_ranges() -> None:
    catalog: Catalog = {
        "web": {"1.0.0": ["db@^1", "cache@*"]},
        "cache": {"1.0.0": ["db@^2"]},
        "db": {"1.0.0": [], "2.0.0": []},
    }
    with pytest.raises(DependencyResolutionError) as caught:
        resolve(["web@1"], catalog, "shop")
    text = str(caught.value)
    assert "conflicting requirements for shop/db" in text
    assert "shop/web 1.0.0 requires ^1" in text and "shop/cache 1.0.0 requires ^2" in text
    assert not isinstance(caught.value, CircularDependency)


def test_conflict_between_pending_requirements() -> None:
    catalog: Catalog = {
        "a": {"1.0.0": ["c@^1"]},
        "b": {"1.0.0": ["c@^2"]},
        "c": {"1.0.0": [], "2.0.0": []},
    }
    with pytest.raises(DependencyResolutionError) as caught:
        resolve(["a@1", "b@1"], catalog, "p")
    assert str(caught.value) == (
        "conflicting requirements for p/c: p/a 1.0.0 requires ^1, p/b 1.0.0 requires ^2; "
        "no version satisfies all (versions: 1.0.0, 2.0.0)"
    )


def test_backtracks_to_a_lower_version_that_fits() -> None:
    catalog: Catalog = {
        "app": {"1.0.0": ["lib@*", "util@*"]},
        "lib": {"1.0.0": ["util@^1"], "2.0.0": ["util@^2"]},
        "util": {"1.0.0": [], "2.0.0": ["lib@^1"]},
    }
    # lib 2 needs util 2, which needs lib 1: the highest consistent choice is lib 1, util 1
    assert resolve(["app@1"], catalog, "p") == {
        "p/app": "1.0.0",
        "p/lib": "1.0.0",
        "p/util": "1.0.0",
    }


def test_cycles_are_named_whole() -> None:
    catalog: Catalog = {"a": {"1.0.0": ["b@1"]}, "b": {"1.0.0": ["c@1"]}, "c": {"1.0.0": ["a@1"]}}
    with pytest.raises(CircularDependency) as caught:
        resolve(["a@1"], catalog, "p")
    assert str(caught.value) == "circular dependency: p/a -> p/b -> p/c -> p/a"
    assert caught.value.context["cycle"] == ["p/a", "p/b", "p/c", "p/a"]


def test_a_cycle_through_the_requirer_and_a_self_dependency() -> None:
    catalog: Catalog = {"db": {"1.0.0": ["web@*"]}, "web": {"0.9.0": []}, "x": {"1.0.0": ["x@*"]}}
    with pytest.raises(CircularDependency, match=r"^circular dependency: p/web -> p/db -> p/web$"):
        resolve(["db@1"], catalog, "p", requirer="p/web")
    with pytest.raises(CircularDependency, match=r"p/x -> p/x"):
        resolve(["x@1"], catalog, "p")
    with pytest.raises(CircularDependency, match=r"p/web -> p/web"):
        resolve(["web@*"], catalog, "p", requirer="p/web")


def test_bad_catalog_entries_are_refused() -> None:
    with pytest.raises(InvalidVersion):
        satisfies("1.0", "^1")
    with pytest.raises(InvalidArgument, match="not one string"):
        resolve("a@1", {}, "p")
    merged = resolve(["db@*"], {"db": {"1.0.0": []}, "p/db": {"2.0.0": []}}, "p")
    assert merged == {"p/db": "2.0.0"}
    with pytest.raises(InvalidVersion):
        resolve(["a@1"], {"a": {"one": []}}, "p")
    with pytest.raises(InvalidArgument, match="name@range"):
        resolve(["a@1"], {"a": {"1.0.0": ["b"]}}, "p")


# ---- properties against a brute-force oracle on small catalogs ----

NAMES = ["a", "b", "c", "d"]
VERSIONS = ["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc.1"]
RANGES = ["*", "^1", "^2", "~1.1", ">=1.1.0", "<2", "1.0.0 - 1.1.0", "^1 || ^2", "^2.1.0-rc.1"]


def decode_catalog(raw: bytes) -> tuple[Catalog, list[str]]:
    """A small catalog and root requirements built from bytes.

    One byte string is a single cheap draw for hypothesis, and it shrinks toward zero
    bytes, which decode to the simplest catalogs.
    """
    stream = iter(raw)

    def byte() -> int:
        return next(stream, 0)

    forward_only = byte() % 2 == 0  # half the catalogs cannot contain a cycle
    catalog: dict[str, dict[str, list[str]]] = {}
    for name in NAMES:
        if byte() % 5 == 4 and len(catalog) + (len(NAMES) - NAMES.index(name)) > 3:
            continue  # leave this unit unpublished
        targets = NAMES[NAMES.index(name) + 1 :] if forward_only else NAMES
        mask = byte() % 15 + 1
        catalog[name] = {}
        for bit, version in enumerate(VERSIONS):
            if not mask & (1 << bit):
                continue
            deps: dict[str, str] = {}
            for _ in range(byte() % 3 if targets else 0):
                deps.setdefault(targets[byte() % len(targets)], RANGES[byte() % len(RANGES)])
            catalog[name][version] = [f"{d}@{r}" for d, r in deps.items()]
    root: dict[str, str] = {}
    for _ in range(1 + byte() % 2):
        root.setdefault(NAMES[byte() % len(NAMES)], RANGES[byte() % len(RANGES)])
    return catalog, [f"{d}@{r}" for d, r in root.items()]


catalogs = st.binary(min_size=96, max_size=96).map(decode_catalog)


def edges_of(catalog: Catalog, unit: str, version: str) -> list[tuple[str, str]]:
    return [(f"p/{s.split('@')[0]}", s.split("@")[1]) for s in catalog[unit.split("/")[1]][version]]


def is_valid(catalog: Catalog, root: list[str], chosen: dict[str, str]) -> bool:
    """Every reachable unit assigned once, every range met, nothing else, no cycle."""
    root_edges = [(f"p/{s.split('@')[0]}", s.split("@")[1]) for s in root]
    reached: set[str] = set()
    frontier = list(root_edges)
    while frontier:
        unit, rng = frontier.pop()
        if unit not in chosen or not satisfies(chosen[unit], rng):
            return False
        if unit not in reached:
            reached.add(unit)
            frontier.extend(edges_of(catalog, unit, chosen[unit]))
    if reached != set(chosen):
        return False
    graph = {u: [d for d, _ in edges_of(catalog, u, v)] for u, v in chosen.items()}
    state: dict[str, int] = {}

    def cyclic(node: str) -> bool:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1 or (nxt not in state and cyclic(nxt)):
                return True
        state[node] = 2
        return False

    return not any(cyclic(u) for u in graph if u not in state)


def all_valid(catalog: Catalog, root: list[str]) -> list[dict[str, str]]:
    units = [f"p/{name}" for name in catalog]
    options = [[None, *catalog[u.split("/")[1]]] for u in units]
    found = []
    for combo in product(*options):
        chosen = {u: v for u, v in zip(units, combo, strict=True) if v is not None}
        if is_valid(catalog, root, chosen):
            found.append(chosen)
    return found


@settings(max_examples=300, deadline=None)
@given(catalogs)
def test_resolver_matches_the_brute_force_oracle(case: tuple[Catalog, list[str]]) -> None:
    catalog, root = case
    valid = all_valid(catalog, root)
    try:
        result = resolve(root, catalog, "p")
    except DependencyResolutionError as err:
        assert valid == [], f"resolver failed ({err}) but {valid[0]} is valid"
        assert str(err)
        return
    assert is_valid(catalog, root, result)
    # highest: no unit can take a higher version with every other choice unchanged
    for unit, version in result.items():
        for other in catalog[unit.split("/")[1]]:
            if parse_version(other) > parse_version(version):
                assert not is_valid(catalog, root, {**result, unit: other})
