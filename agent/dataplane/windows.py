"""Request windows per (unit, version, instance) (pure).

Requests and errors are HAProxy's exact per-server counts (:meth:`RequestWindows.count`,
fed from agent/dataplane/server_counters.py); latency comes from the request log lines,
which HAProxy may sample (one line in ``sample_every``), so a window's latency sketch holds
``latency.count`` samples of its ``requests``. Time is cut into fixed buckets, read two ways:

- ``take_completed``: the buckets completed since the previous take, each handed over
  exactly once (what the agent reports, so the coordinator can add windows up);
- ``snapshots``: a sliding window over the last ``seconds``, merging the buckets that
  overlap it, so it may reach back up to one bucket further than asked (its ``start``
  says exactly where).

Snapshots are plain data a coordinator merges across hosts with :func:`merge_snapshots`
(counts add, latency sketches merge exactly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.dataplane.request_log import RequestRecord
from common.errors import InvalidArgument
from common.latency import LatencySketch

__all__ = ["RequestWindows", "WindowSnapshot", "merge_snapshots"]


@dataclass(frozen=True)
class WindowSnapshot:
    """Requests of one (unit, version, instance) seen by one host over [start, end]."""

    unit: str
    version: str
    instance: str
    host: str
    requests: int
    errors: int
    latency: LatencySketch
    start: float
    end: float
    sample_every: int = 1
    """The latency sketch holds one request in this many (the log's sampling ratio)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "version": self.version,
            "instance": self.instance,
            "host": self.host,
            "requests": self.requests,
            "errors": self.errors,
            "latency": self.latency.to_dict(),
            "start": self.start,
            "end": self.end,
            "sample_every": self.sample_every,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> WindowSnapshot:
        latency = data.get("latency", {})
        if not isinstance(latency, Mapping):
            raise InvalidArgument("window 'latency' must be an object")
        try:
            return cls(
                unit=str(data["unit"]),
                version=str(data["version"]),
                instance=str(data["instance"]),
                host=str(data["host"]),
                requests=int(str(data["requests"])),
                errors=int(str(data["errors"])),
                latency=LatencySketch.from_dict(latency),
                start=float(str(data["start"])),
                end=float(str(data["end"])),
                sample_every=int(str(data.get("sample_every", 1))),
            )
        except (KeyError, ValueError) as exc:
            raise InvalidArgument(f"malformed request window: {exc}") from exc


def merge_snapshots(
    snapshots: Iterable[WindowSnapshot],
    *,
    unit: str | None = None,
    version: str = "*",
    instance: str = "*",
    host: str = "*",
) -> WindowSnapshot | None:
    """One window adding up ``snapshots`` (e.g. one version across all hosts)."""
    items = list(snapshots)
    if not items:
        return None
    latency = LatencySketch(items[0].latency.relative_accuracy)
    for item in items:
        latency.merge(item.latency)
    return WindowSnapshot(
        unit=unit if unit is not None else items[0].unit,
        version=version,
        instance=instance,
        host=host,
        requests=sum(i.requests for i in items),
        errors=sum(i.errors for i in items),
        latency=latency,
        start=min(i.start for i in items),
        end=max(i.end for i in items),
        sample_every=max(i.sample_every for i in items),
    )


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    latency: LatencySketch = field(default_factory=LatencySketch)


_Key = tuple[str, str, str]  # unit, version, instance


class RequestWindows:
    """Time-bucketed counters and latency sketches, plus last activity times."""

    def __init__(self, bucket_s: float = 1.0, retention_s: float = 900.0,
                 sample_every: int = 1) -> None:
        if bucket_s <= 0 or retention_s < bucket_s:
            raise InvalidArgument("window buckets need 0 < bucket_s <= retention_s")
        if sample_every < 1:
            raise InvalidArgument(f"a log sampling ratio is 1 in n >= 1, got {sample_every}")
        self.bucket_s = bucket_s
        self.sample_every = sample_every
        self.retention_s = retention_s
        self._buckets: dict[_Key, dict[int, _Bucket]] = {}
        self._activity: dict[tuple[str, str], float] = {}
        self._unit_activity: dict[str, float] = {}
        self._pruned_at = -math.inf
        self._handed_over: int | None = None
        """First bucket not handed over by ``take_completed`` yet (None: none taken)."""

    def _index(self, when: float) -> int:
        return math.floor(when / self.bucket_s)

    def _bucket(self, key: _Key, now: float) -> _Bucket:
        index = self._index(now)
        bucket = self._buckets.setdefault(key, {}).get(index)
        if bucket is None:
            bucket = self._buckets[key][index] = _Bucket()
        return bucket

    def record(self, record: RequestRecord, now: float) -> None:
        """A (sampled) log line: its latency and the activity it shows."""
        if record.latency_ms is not None:
            self._bucket((record.unit, record.version, record.instance), now).latency.add(
                record.latency_ms)
        self._active(record.unit, record.instance, now)

    def count(self, unit: str, version: str, instance: str, requests: int, errors: int,
              now: float) -> None:
        """Requests and errors HAProxy counted for an instance since the last count."""
        bucket = self._bucket((unit, version, instance), now)
        bucket.requests += requests
        bucket.errors += errors
        if requests:
            self._active(unit, instance, now)

    def _active(self, unit: str, instance: str, now: float) -> None:
        self._unit_activity[unit] = max(now, self._unit_activity.get(unit, now))
        if instance:
            slot = (unit, instance)
            self._activity[slot] = max(now, self._activity.get(slot, now))
        if now - self._pruned_at >= self.bucket_s:
            self.prune(now)

    def prune(self, now: float) -> None:
        """Drop buckets older than the retention."""
        self._pruned_at = now
        oldest = self._index(now - self.retention_s)
        for key in list(self._buckets):
            buckets = self._buckets[key]
            for index in [i for i in buckets if i < oldest]:
                del buckets[index]
            if not buckets:
                del self._buckets[key]

    def snapshots(
        self,
        unit: str,
        now: float,
        *,
        version: str | None = None,
        seconds: float = 60.0,
        host: str = "",
    ) -> list[WindowSnapshot]:
        """One snapshot per (version, instance) of ``unit`` with requests in the window."""
        if seconds <= 0:
            raise InvalidArgument(f"a window must span a positive time, got {seconds}")
        seconds = min(seconds, self.retention_s)
        low, high = self._index(now - seconds), self._index(now)
        return self._merged(
            low, high + 1, low * self.bucket_s, now, host,
            lambda key: key[0] == unit and (version is None or key[1] == version))

    def take_completed(self, now: float, host: str = "") -> list[WindowSnapshot]:
        """Per (unit, version, instance), the requests of the buckets that completed since
        the previous take (the bucket filling at ``now`` is not complete): each request is
        handed over once, in exactly one window.

        The windows of one take share ``[start, end)``: from where the previous take ended
        (the oldest bucket kept, the first time or after a long pause) to the start of the
        bucket filling now."""
        filling = self._index(now)
        kept = self._index(now - self.retention_s)
        first = self._handed_over
        if first is None:
            first = min((i for buckets in self._buckets.values() for i in buckets),
                        default=filling)
        first = max(first, kept)
        if first >= filling:
            return []
        self._handed_over = filling
        return self._merged(first, filling, first * self.bucket_s, filling * self.bucket_s,
                            host, lambda key: True)

    def _merged(self, low: int, high: int, start: float, end: float, host: str,
                wanted: Callable[[_Key], bool]) -> list[WindowSnapshot]:
        """One snapshot per key ``wanted`` with requests in buckets ``low <= i < high``."""
        result: list[WindowSnapshot] = []
        for key, buckets in sorted(self._buckets.items()):
            if not wanted(key):
                continue
            chosen = [b for i, b in buckets.items() if low <= i < high]
            if not chosen:
                continue
            latency = LatencySketch()
            for bucket in chosen:
                latency.merge(bucket.latency)
            unit, version, instance = key
            result.append(WindowSnapshot(
                unit=unit, version=version, instance=instance, host=host,
                requests=sum(b.requests for b in chosen), errors=sum(b.errors for b in chosen),
                latency=latency, start=start, end=end, sample_every=self.sample_every))
        return result

    def last_activity(self, unit: str, instance: str | None = None) -> float | None:
        """When ``unit`` (or one of its instances) last served a request; None if never."""
        if instance is None:
            return self._unit_activity.get(unit)
        return self._activity.get((unit, instance))
