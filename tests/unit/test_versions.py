"""Bump rules, version tags and publish planning."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.dependencies import Catalog
from common.errors import (
    BumpTooSmall,
    DependencyResolutionError,
    FailedPrecondition,
    InvalidArgument,
    InvalidVersion,
    VersionExists,
)
from common.resources import Resources
from common.unit_spec import HealthCheck, UnitSpec
from common.versions import (
    Bump,
    ChangeSet,
    VersionTag,
    actual_bump,
    check_bump,
    parse_version,
    plan_publish,
    required_bump,
)

NOW = 1_700_000_000.0
FIX = ChangeSet(fixes=("null check",))
FEATURE = ChangeSet(features=("search",))
BREAKING = ChangeSet(breaking=("drop v1 API",))


def spec(version: str, **changes: object) -> UnitSpec:
    base = UnitSpec(
        apartment="shop",
        unit="web",
        version=version,
        image="sha256:" + "ab" * 32,
        port=8080,
        command=("python3", "-m", "http.server"),
        env={"MODE": "prod"},
        # explicit, so the pinned checksum below pins the canonical form, not the defaults
        health_check=HealthCheck("/health", (), 5.0, 2.0, 3),
        resources=Resources.parse(cpu="500m", memory="256Mi"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def published(*versions: str) -> list[VersionTag]:
    tags: list[VersionTag] = []
    for v in versions:
        tags.append(plan_publish(tags, spec(v), ChangeSet(), NOW).tag)
    return tags


@pytest.mark.parametrize(
    ("changes", "bump"),
    [
        (ChangeSet(), Bump.NONE),
        (ChangeSet(internal=("refactor",)), Bump.PATCH),
        (FIX, Bump.PATCH),
        (ChangeSet(features=("a",), fixes=("b",)), Bump.MINOR),
        (ChangeSet(breaking=("x",), features=("a",), fixes=("b",), internal=("c",)), Bump.MAJOR),
    ],
)
def test_required_bump(changes: ChangeSet, bump: Bump) -> None:
    assert required_bump(changes) is bump


@pytest.mark.parametrize(
    ("base", "new", "bump"),
    [
        ("1.4.2", "2.0.0", Bump.MAJOR),
        ("1.4.2", "1.5.0", Bump.MINOR),
        ("1.4.2", "1.4.3", Bump.PATCH),
        ("1.4.2", "1.4.2", Bump.NONE),
        ("1.4.2", "2.0.0-rc.1", Bump.MAJOR),
        ("1.4.2", "1.4.3-rc.1", Bump.PATCH),
        ("1.4.2", "1.3.9", Bump.NONE),
        ("1.4.2", "0.9.0", Bump.NONE),
        (None, "0.1.0", Bump.MAJOR),
    ],
)
def test_actual_bump(base: str | None, new: str, bump: Bump) -> None:
    assert actual_bump(None if base is None else parse_version(base), parse_version(new)) is bump


def test_bump_too_small_has_the_planned_message() -> None:
    with pytest.raises(BumpTooSmall) as caught:
        check_bump(parse_version("1.4.2"), parse_version("1.5.0"), BREAKING)
    assert str(caught.value) == "Version bump too small. Required: major, Actual: minor"
    assert caught.value.code == "FAILED_PRECONDITION"
    with pytest.raises(BumpTooSmall) as caught:
        check_bump(parse_version("1.4.2"), parse_version("1.4.2"), FIX)
    assert str(caught.value) == "Version bump too small. Required: patch, Actual: none"


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
    st.sampled_from([ChangeSet(), FIX, FEATURE, BREAKING]),
)
def test_bump_check_accepts_exactly_big_enough_bumps(
    base: tuple[int, int, int], new: tuple[int, int, int], changes: ChangeSet
) -> None:
    b, n = parse_version(".".join(map(str, base))), parse_version(".".join(map(str, new)))
    actual = actual_bump(b, n)
    if n > b:
        assert actual > Bump.NONE
    if actual >= required_bump(changes):
        assert check_bump(b, n, changes) is actual
    else:
        with pytest.raises(BumpTooSmall):
            check_bump(b, n, changes)


def test_first_publish_creates_a_tag() -> None:
    decision = plan_publish([], spec("0.1.0"), BREAKING, NOW, metadata={"by": "ci"})
    tag = decision.tag
    assert decision.created and decision.actual is Bump.MAJOR
    assert (tag.unit, tag.version, tag.created_at) == ("shop/web", "0.1.0", NOW)
    assert tag.checksum == spec("0.1.0").checksum() and len(tag.checksum) == 64
    assert dict(tag.metadata) == {"by": "ci"} and dict(tag.dependencies) == {}


def test_publishing_the_same_content_twice_is_idempotent() -> None:
    tags = published("1.0.0")
    again = plan_publish(tags, spec("1.0.0"), FIX, NOW + 60)
    assert not again.created and again.tag is tags[0]


def test_same_version_with_different_content_is_refused() -> None:
    tags = published("1.0.0")
    with pytest.raises(VersionExists, match="already published with different content"):
        plan_publish(tags, spec("1.0.0", port=9090), FIX, NOW)


def test_build_metadata_never_makes_a_new_version() -> None:
    tags = published("1.0.0+b1")
    with pytest.raises(VersionExists, match="build metadata"):
        plan_publish(tags, spec("1.0.0+b2"), FIX, NOW)


def test_new_version_must_be_greater_than_every_published_one_of_its_line() -> None:
    tags = published("1.0.0", "1.3.0", "2.0.0-rc.1")
    assert plan_publish(tags, spec("1.4.0"), FEATURE, NOW).actual is Bump.MINOR
    with pytest.raises(FailedPrecondition, match=r"every published 1\.x version; the highest "
                       r"published 1\.x is 1\.3\.0") as caught:
        plan_publish(tags, spec("1.2.0"), FEATURE, NOW)
    assert not isinstance(caught.value, BumpTooSmall)
    assert caught.value.context["line"] == "1.x"


def test_backport_patch_after_a_newer_major() -> None:
    tags = published("1.2.0", "2.0.0")
    decision = plan_publish(tags, spec("1.2.1"), FIX, NOW)
    assert decision.created and decision.actual is Bump.PATCH
    tags.append(decision.tag)
    with pytest.raises(FailedPrecondition, match=r"1\.2\.0 is refused: it must be greater "
                       r"than every published 1\.2\.x version; the highest published "
                       r"1\.2\.x is 1\.2\.1"):
        plan_publish(published("1.2.1", "2.0.0"), spec("1.2.0"), FIX, NOW)
    with pytest.raises(BumpTooSmall, match="Required: minor, Actual: patch"):
        plan_publish(tags, spec("1.2.2"), FEATURE, NOW)
    assert plan_publish(tags, spec("1.3.0"), FEATURE, NOW).actual is Bump.MINOR


def test_a_new_major_must_exceed_every_published_version() -> None:
    with pytest.raises(FailedPrecondition, match=r"a new major line must be greater than "
                       r"every published version; the highest published is 2\.0\.0"):
        plan_publish(published("2.0.0"), spec("1.0.0"), BREAKING, NOW)
    assert plan_publish(published("1.0.0", "2.0.0"), spec("3.0.0"), BREAKING, NOW).created


def test_pre_releases_claim_the_bump_of_their_release() -> None:
    tags = published("1.4.0", "2.0.0-rc.1")
    assert plan_publish(tags, spec("2.0.0-rc.2"), BREAKING, NOW).actual is Bump.MAJOR
    assert plan_publish(tags, spec("2.0.0"), BREAKING, NOW).actual is Bump.MAJOR
    with pytest.raises(BumpTooSmall, match="Required: major, Actual: minor"):
        plan_publish(published("1.4.0"), spec("1.5.0-rc.1"), BREAKING, NOW)


def test_bump_is_checked_against_the_highest_release() -> None:
    tags = published("1.0.0", "1.1.0")
    assert plan_publish(tags, spec("1.1.1"), FIX, NOW).created
    with pytest.raises(BumpTooSmall) as caught:
        plan_publish(tags, spec("1.1.1"), FEATURE, NOW)
    assert str(caught.value) == "Version bump too small. Required: minor, Actual: patch"


def test_tags_of_other_units_are_ignored() -> None:
    other = plan_publish([], spec("9.0.0", unit="api"), BREAKING, NOW).tag
    assert plan_publish([other], spec("1.0.0"), BREAKING, NOW).created


def test_dependencies_are_resolved_into_the_tag() -> None:
    catalog: Catalog = {"db": {"1.0.0": [], "1.4.0": [], "2.0.0": []}}
    decision = plan_publish([], spec("1.0.0", dependencies=("db@^1",)), BREAKING, NOW, catalog)
    assert dict(decision.tag.dependencies) == {"shop/db": "1.4.0"}
    with pytest.raises(DependencyResolutionError, match=r"versions: 1\.0\.0, 1\.4\.0, 2\.0\.0"):
        plan_publish([], spec("1.0.0", dependencies=("db@^3",)), BREAKING, NOW, catalog)
    with pytest.raises(DependencyResolutionError, match="not published"):
        plan_publish([], spec("1.0.0", dependencies=("db@^1",)), BREAKING, NOW)


def test_checksum_covers_exactly_the_content() -> None:
    base = spec("1.0.0")
    assert base.checksum() == spec("7.0.0").checksum()  # version is not content
    for change in (
        {"image": "sha256:" + "cd" * 32},
        {"command": ("sh",)},
        {"env": {"MODE": "dev"}},
        {"port": 81},
        {"health_check": HealthCheck(path="/ready")},
        {"resources": Resources(cpu=1.0)},
        {"dependencies": ("db@^1",)},
    ):
        assert spec("1.0.0", **change).checksum() != base.checksum(), change


def test_checksum_is_stable_across_orderings_and_forms() -> None:
    a = spec("1.0.0", env={"A": "1", "B": "2"}, dependencies=("db@^1", "shop/cache@*"))
    b = spec("1.0.0", env={"B": "2", "A": "1"}, dependencies=("cache@*", "db@^1"))
    assert a.checksum() == b.checksum()
    assert (
        spec("1.0.0", resources=Resources(cpu=1)).checksum()
        == spec("1.0.0", resources=Resources(cpu=1.0)).checksum()
    )
    # pinned: a change to the canonical form would silently change every published checksum
    assert spec("1.0.0").checksum() == (
        "8f0c03b2eb0a2e64ce2caf2bac3534fd9bf078cc0c3c3c9bcbae3762af325312"
    )
    content = json.dumps(spec("1.0.0").content(), sort_keys=True)
    assert "shop/db" not in content


def test_tag_round_trips_and_detects_corruption() -> None:
    catalog: Catalog = {"db": {"1.0.0": []}}
    tag = plan_publish([], spec("1.0.0", dependencies=("db@1",)), BREAKING, NOW, catalog).tag
    again = VersionTag.from_dict(json.loads(json.dumps(tag.to_dict())))
    assert again == tag
    broken = tag.to_dict() | {"checksum": "0" * 64}
    with pytest.raises(InvalidArgument, match="corrupt"):
        VersionTag.from_dict(broken)
    with pytest.raises(InvalidArgument, match="created_at"):
        VersionTag.from_dict(tag.to_dict() | {"created_at": "now"})
    with pytest.raises(InvalidArgument, match="metadata"):
        VersionTag.from_dict(tag.to_dict() | {"metadata": {"a": 1}})


def test_change_set_from_dict() -> None:
    assert ChangeSet.from_dict({"features": ["x"]}) == ChangeSet(features=("x",))
    assert ChangeSet.from_dict(FEATURE.to_dict()) == FEATURE
    with pytest.raises(InvalidArgument, match=r"unknown change kind.*docs"):
        ChangeSet.from_dict({"docs": ["x"]})
    with pytest.raises(InvalidArgument, match=r"changes\.fixes"):
        ChangeSet.from_dict({"fixes": "typo"})


def test_invalid_versions_in_specs() -> None:
    with pytest.raises(InvalidVersion):
        spec("1.0")


SMALL_VERSIONS = st.builds(
    lambda major, minor, patch, pre: f"{major}.{minor}.{patch}" + (f"-rc.{pre}" if pre else ""),
    st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2),
)


def _line_of(published: list[str], new: str) -> list[str]:
    """The rule as the issue states it, written apart from the code under test."""
    key = parse_version(new)
    same_minor = [v for v in published
                  if parse_version(v).major == key.major and parse_version(v).minor == key.minor]
    same_major = [v for v in published if parse_version(v).major == key.major]
    return same_minor or same_major or published


@settings(max_examples=150, deadline=None)
@given(st.lists(SMALL_VERSIONS, max_size=12))
def test_accepted_iff_greater_than_every_published_version_of_its_line(
    candidates: list[str],
) -> None:
    tags: list[VersionTag] = []
    for candidate in candidates:
        names = [t.version for t in tags]
        if any(parse_version(v).compare(candidate) == 0 for v in names):
            continue
        line = _line_of(names, candidate)
        expected = all(parse_version(candidate) > parse_version(v) for v in line)
        try:
            decision = plan_publish(tags, spec(candidate), ChangeSet(), NOW)
        except FailedPrecondition:
            assert not expected
            continue
        assert expected
        tags.append(decision.tag)
        releases = [parse_version(v) for v in names if not parse_version(v).prerelease]
        below = [r for r in releases if r < parse_version(candidate)]
        assert decision.actual is actual_bump(max(below, default=None), parse_version(candidate))
    order = [parse_version(t.version) for t in tags]
    for i, later in enumerate(order):
        for earlier in order[:i]:
            if (earlier.major, earlier.minor) == (later.major, later.minor):
                assert earlier < later  # each minor line only grows
        if all(earlier.major != later.major for earlier in order[:i]):
            assert all(earlier < later for earlier in order[:i])  # new majors exceed all


@settings(max_examples=100, deadline=None)
@given(st.lists(SMALL_VERSIONS, min_size=1, max_size=8))
def test_a_version_above_everything_is_always_accepted(candidates: list[str]) -> None:
    tags: list[VersionTag] = []
    for candidate in candidates:
        with contextlib.suppress(FailedPrecondition, VersionExists):
            tags.append(plan_publish(tags, spec(candidate), ChangeSet(), NOW).tag)
    top = max((parse_version(t.version) for t in tags), default=parse_version("0.0.0"))
    assert plan_publish(tags, spec(str(top.bump_major())), BREAKING, NOW).created
