"""HAProxy server weights that realise a traffic split between versions.

HAProxy sends each server a share of requests equal to its weight over the sum of all
weights in the backend; absolute weights are integers from 0 to 256. Every host's
backend lists the servers of all hosts, so one weight map is applied on every host.

Method: each version (group) ``g`` with target share ``p_g`` and ``n_g`` servers gets a
total weight ``T_g`` with ``T_g <= 256 * n_g``. The scale ``S = sum(T_g)`` is the largest
integer for which no group exceeds its cap, ``S = floor(min_g 256 * n_g / p_g)``, so
``S >= 256``. The totals are ``S * p_g`` rounded by largest remainder (they sum exactly to
``S`` and each is off by less than 1), so each group's effective share is off by less than
``1 / S <= 1/256``, i.e. under 0.4 percentage points. A group's total is then spread over
its servers as evenly as integers allow (weights differ by at most 1). A share of exactly
0 gives every server of that group weight 0, and exactly 100 gives every other server 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

from common.errors import InvalidArgument

__all__ = ["MAX_WEIGHT", "effective_split", "split_weights", "two_version_weights"]

MAX_WEIGHT = 256


def two_version_weights(
    new_percent: float, old_servers: Sequence[str], new_servers: Sequence[str]
) -> dict[str, int]:
    """Weights sending ``new_percent`` % of traffic to ``new_servers``, the rest to the old."""
    _check_percent("new_percent", new_percent)
    return split_weights(
        {"old": 100 - Fraction(new_percent), "new": Fraction(new_percent)},
        {"old": old_servers, "new": new_servers},
    )


def split_weights(
    percents: Mapping[str, float | Fraction], servers: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Weights for every server so group ``g`` gets ``percents[g]`` % of the traffic.

    ``percents`` must sum to 100; a group with a share above 0 needs at least one server.
    Groups named in ``servers`` but not in ``percents`` get 0 %.
    """
    shares = {group: Fraction(_check_percent(group, p)) for group, p in percents.items()}
    if sum(shares.values()) != 100:
        total = float(sum(shares.values()))
        raise InvalidArgument(f"traffic percentages must add up to 100, got {total:g}")
    seen: set[str] = set()
    for group, names in servers.items():
        for name in names:
            if name in seen:
                raise InvalidArgument(f"server {name!r} is listed twice", server=name, group=group)
            seen.add(name)
    for group, share in shares.items():
        if share > 0 and not servers.get(group):
            raise InvalidArgument(
                f"cannot send {float(share):g}% of traffic to {group}: it has no servers",
                group=group,
            )
    live = {group: share for group, share in shares.items() if share > 0}
    scale = math.floor(min(MAX_WEIGHT * len(servers[g]) * 100 / p for g, p in live.items()))
    totals = _largest_remainder({g: scale * p / 100 for g, p in live.items()}, scale)
    weights: dict[str, int] = {}
    for group, names in servers.items():
        weights.update(_spread(totals.get(group, 0), names))
    return weights


def effective_split(
    weights: Mapping[str, int], servers: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """The percentage of traffic each group receives under ``weights``."""
    total = sum(weights[name] for names in servers.values() for name in names)
    if total == 0:
        return {group: 0.0 for group in servers}
    return {
        group: 100.0 * sum(weights[name] for name in names) / total
        for group, names in servers.items()
    }


def _check_percent(name: str, value: float | Fraction) -> float | Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise InvalidArgument(f"percentage for {name} must be a number, got {value!r}")
    if not (0 <= value <= 100):  # also refuses NaN
        raise InvalidArgument(f"percentage for {name} must be from 0 to 100, got {value}")
    return value


def _largest_remainder(exact: Mapping[str, Fraction], total: int) -> dict[str, int]:
    """Integers that sum to ``total``, each the floor or ceiling of its exact value."""
    floors = {group: math.floor(value) for group, value in exact.items()}
    left = total - sum(floors.values())
    by_remainder = sorted(exact, key=lambda g: (-(exact[g] - floors[g]), g))
    for group in by_remainder[:left]:
        floors[group] += 1
    return floors


def _spread(total: int, names: Sequence[str]) -> dict[str, int]:
    """``total`` over ``names`` as evenly as possible, larger shares to earlier names."""
    if not names:
        return {}
    base, extra = divmod(total, len(names))
    ordered = sorted(names)
    return {name: base + (1 if index < extra else 0) for index, name in enumerate(ordered)}
