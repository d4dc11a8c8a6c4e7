"""LatencySketch: a mergeable latency summary with a relative error bound.

It is a DDSketch (Masson, Rim and Lee, VLDB 2019) over a sparse dict of buckets, using
the ``ddsketch`` library's ``LogarithmicMapping`` to map a latency to its bucket.

Error bound: for ``q`` in [0, 1] over ``n`` recorded values sorted as ``x[0] <= ... <=
x[n-1]``, ``quantile(q)`` returns ``v`` with ``|v - x[k]| <= relative_accuracy * x[k]``
where ``k = floor(q * (n - 1))``. The default relative accuracy is 1 %. Zero latencies are
kept exactly (returned as 0.0). Buckets are integer counts, so merging is exact: the merge
of two sketches is identical, bucket for bucket, to the sketch of all their values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from ddsketch import LogarithmicMapping

from common.errors import InvalidArgument

__all__ = ["DEFAULT_RELATIVE_ACCURACY", "LatencySketch"]

DEFAULT_RELATIVE_ACCURACY = 0.01


class LatencySketch:
    """Latencies in milliseconds, summarised for quantiles; mergeable across hosts."""

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        if not (isinstance(relative_accuracy, float | int) and 0.0 < relative_accuracy < 1.0):
            raise InvalidArgument(
                f"relative_accuracy must be between 0 and 1 (exclusive), got {relative_accuracy!r}",
                field="relative_accuracy",
            )
        self._accuracy = float(relative_accuracy)
        self._mapping = LogarithmicMapping(self._accuracy)
        self._bins: dict[int, int] = {}
        self._zero = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    @classmethod
    def of(
        cls, values: Iterable[float], relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY
    ) -> LatencySketch:
        """A sketch holding each of ``values`` once."""
        sketch = cls(relative_accuracy)
        for value in values:
            sketch.add(value)
        return sketch

    @property
    def relative_accuracy(self) -> float:
        return self._accuracy

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    @property
    def mean(self) -> float | None:
        return self._sum / self._count if self._count else None

    @property
    def min(self) -> float | None:
        return self._min if self._count else None

    @property
    def max(self) -> float | None:
        return self._max if self._count else None

    def add(self, ms: float, count: int = 1) -> None:
        """Record ``count`` requests that each took ``ms`` milliseconds."""
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms):
            raise InvalidArgument(f"latency must be a finite number of ms, got {ms!r}")
        if ms < 0:
            raise InvalidArgument(f"latency cannot be negative, got {ms} ms", latency_ms=ms)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidArgument(f"count must be a whole number >= 0, got {count!r}")
        if count == 0:
            return
        value = float(ms)
        if value < self._mapping.min_possible:
            self._zero += count
        else:
            key = int(self._mapping.key(value))
            self._bins[key] = self._bins.get(key, 0) + count
        self._count += count
        self._sum += value * count
        self._min = min(self._min, value)
        self._max = max(self._max, value)

    def merge(self, other: LatencySketch) -> None:
        """Add every value of ``other`` into this sketch (in place)."""
        if other._accuracy != self._accuracy:
            raise InvalidArgument(
                "cannot merge latency sketches of different accuracy "
                f"({self._accuracy} and {other._accuracy})"
            )
        for key, count in other._bins.items():
            self._bins[key] = self._bins.get(key, 0) + count
        self._zero += other._zero
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def copy(self) -> LatencySketch:
        twin = LatencySketch(self._accuracy)
        twin.merge(self)
        return twin

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 <= q <= 1) within the stated error bound; None when empty."""
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 <= q <= 1.0:
            raise InvalidArgument(f"quantile must be between 0 and 1, got {q!r}")
        if self._count == 0:
            return None
        rank = q * (self._count - 1)
        seen = self._zero
        if seen > rank:
            return 0.0
        for key in sorted(self._bins):
            seen += self._bins[key]
            if seen > rank:
                value = float(self._mapping.value(key))
                # the exact extremes are known; never report past them
                return min(max(value, self._min), self._max)
        return self._max  # unreachable unless counts disagree; the maximum is safe

    @property
    def buckets(self) -> dict[int, int]:
        """Bucket index -> count of the positive values (a copy)."""
        return dict(self._bins)

    @property
    def zero_count(self) -> int:
        return self._zero

    @classmethod
    def from_buckets(cls, relative_accuracy: float, buckets: Mapping[int, int],
                     zero_count: int = 0, total: float = 0.0, lo: float = 0.0,
                     hi: float = 0.0) -> LatencySketch:
        """A sketch from its buckets (as ``buckets`` gives them) and its exact figures;
        malformed input raises InvalidArgument."""
        keys = sorted(buckets)
        data: dict[str, object] = {
            "a": relative_accuracy,
            "k": [key - previous for previous, key in zip([0, *keys], keys, strict=False)],
            "c": [buckets[key] for key in keys], "z": zero_count, "s": total,
            "lo": lo, "hi": hi,
        }
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, object]:
        """Compact JSON-safe form: sorted bucket keys delta-encoded next to their counts."""
        keys = sorted(self._bins)
        deltas = [key - previous for previous, key in zip([0, *keys], keys, strict=False)]
        data: dict[str, object] = {
            "a": self._accuracy,
            "k": deltas,
            "c": [self._bins[key] for key in keys],
            "z": self._zero,
            "s": self._sum,
        }
        if self._count:
            data["lo"] = self._min
            data["hi"] = self._max
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LatencySketch:
        """Rebuild a sketch from ``to_dict`` output; malformed input raises InvalidArgument."""
        if not isinstance(data, Mapping):
            raise InvalidArgument("a latency sketch must be a JSON object")
        deltas, counts = _ints(data, "k"), _ints(data, "c")
        zero = data.get("z", 0)
        if isinstance(zero, bool) or not isinstance(zero, int):
            raise InvalidArgument(f"latency sketch 'z' must be an integer, got {zero!r}")
        if len(deltas) != len(counts):
            raise InvalidArgument("latency sketch 'k' and 'c' must have the same length")
        if zero < 0 or any(c <= 0 for c in counts):
            raise InvalidArgument("latency sketch counts must be positive integers")
        sketch = cls(_float(data, "a", DEFAULT_RELATIVE_ACCURACY))
        key = 0
        for delta, count in zip(deltas, counts, strict=True):
            key += delta
            sketch._bins[key] = sketch._bins.get(key, 0) + count
        sketch._zero = zero
        sketch._count = zero + sum(counts)
        if sketch._count:
            sketch._min = _float(data, "lo", None)
            sketch._max = _float(data, "hi", None)
            sketch._sum = _float(data, "s", 0.0)
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return (
            self._accuracy == other._accuracy
            and self._bins == other._bins
            and self._zero == other._zero
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        p50, p95 = self.quantile(0.5), self.quantile(0.95)
        return f"LatencySketch(count={self._count}, p50={p50}, p95={p95})"


def _ints(data: Mapping[str, object], key: str) -> list[int]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise InvalidArgument(f"latency sketch {key!r} must be a list of integers, got {value!r}")
    return [int(v) for v in value]


def _float(data: Mapping[str, object], key: str, default: float | None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"latency sketch {key!r} must be a finite number, got {value!r}")
    return float(value)
