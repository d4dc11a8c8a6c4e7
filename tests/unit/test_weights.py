"""HAProxy weights: within 0.5 points of the target, 0 and 100 exact."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.weights import MAX_WEIGHT, effective_split, split_weights, two_version_weights


def servers(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


percents = st.one_of(
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.integers(min_value=0, max_value=100),
    st.sampled_from([0, 0.1, 0.4, 0.5, 1, 5, 25, 50, 99.5, 99.9, 100]),
)


@settings(max_examples=300, deadline=None)
@given(percents, st.integers(1, 40), st.integers(1, 40))
def test_two_versions_within_half_a_point(percent: float, n_old: int, n_new: int) -> None:
    old, new = servers("old", n_old), servers("new", n_new)
    weights = two_version_weights(percent, old, new)
    assert set(weights) == set(old) | set(new)
    assert all(0 <= w <= MAX_WEIGHT for w in weights.values())
    split = effective_split(weights, {"old": old, "new": new})
    assert abs(split["new"] - percent) <= 0.5
    if percent == 0:
        assert all(weights[s] == 0 for s in new) and all(weights[s] > 0 for s in old)
    if percent == 100:
        assert all(weights[s] == 0 for s in old) and all(weights[s] > 0 for s in new)
    for group in (old, new):  # even spread inside a version
        assert max(weights[s] for s in group) - min(weights[s] for s in group) <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(1, 12)), min_size=1, max_size=5))
def test_many_versions_within_half_a_point(groups: list[tuple[int, int]]) -> None:
    raw = [share for share, _ in groups]
    if sum(raw) == 0:
        raw[0] = 1
    total = sum(raw)
    percents = {f"v{i}": Fraction(100 * share, total) for i, share in enumerate(raw)}
    members = {f"v{i}": servers(f"v{i}", n) for i, (_, n) in enumerate(groups)}
    weights = split_weights(percents, members)
    assert all(0 <= w <= MAX_WEIGHT for w in weights.values())
    split = effective_split(weights, members)
    for group, target in percents.items():
        assert abs(split[group] - float(target)) <= 0.5
        if target == 0:
            assert all(weights[s] == 0 for s in members[group])


def test_examples() -> None:
    assert two_version_weights(0, ["a"], ["b"]) == {"a": 256, "b": 0}
    assert two_version_weights(100, ["a"], ["b"]) == {"a": 0, "b": 256}
    assert two_version_weights(50, ["a"], ["b"]) == {"a": 256, "b": 256}
    weights = two_version_weights(5, ["a", "b"], ["c"])
    assert effective_split(weights, {"old": ["a", "b"], "new": ["c"]})["new"] == pytest.approx(
        5, abs=0.5
    )


def test_tiny_share_across_many_new_servers_turns_some_off() -> None:
    old, new = ["old"], servers("new", 100)
    weights = two_version_weights(1, old, new)
    split = effective_split(weights, {"old": old, "new": new})
    assert abs(split["new"] - 1) <= 0.5
    assert 0 < sum(1 for s in new if weights[s] > 0) < 100


def test_no_servers_for_a_share_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="no servers"):
        two_version_weights(30, [], ["n"])
    with pytest.raises(InvalidArgument, match="no servers"):
        two_version_weights(30, ["o"], [])
    assert two_version_weights(100, [], ["n"]) == {"n": 256}
    assert two_version_weights(0, ["o"], []) == {"o": 256}


@pytest.mark.parametrize("bad", [-1, 100.5, float("nan"), "50", True])
def test_bad_percentages_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="percentage"):
        two_version_weights(bad, ["o"], ["n"])  # type: ignore[arg-type]


def test_shares_must_add_up_and_servers_be_unique() -> None:
    with pytest.raises(InvalidArgument, match="add up to 100"):
        split_weights({"a": 40, "b": 40}, {"a": ["x"], "b": ["y"]})
    with pytest.raises(InvalidArgument, match="listed twice"):
        split_weights({"a": 50, "b": 50}, {"a": ["x"], "b": ["x"]})


def test_effective_split_of_all_zero_weights() -> None:
    assert effective_split({"a": 0}, {"g": ["a"]}) == {"g": 0.0}
