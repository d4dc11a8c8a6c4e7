"""The request-metrics windows agents reported, kept in memory for the rollout engine.

Each report carries the completed windows of the host's instances; they are kept here
(oldest dropped first past ``retention``) and read back per unit and version to judge
canary steps. Only the leader receives reports, so a new leader starts empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from common.stream_messages import MetricsWindow

__all__ = ["DEFAULT_RETENTION", "MetricsWindows"]

DEFAULT_RETENTION = 20_000
"""Windows kept (oldest dropped first)."""


class MetricsWindows:
    def __init__(self, retention: int = DEFAULT_RETENTION) -> None:
        self._windows: deque[MetricsWindow] = deque(maxlen=retention)
        self._last_request: dict[tuple[str, str], float] = {}

    def record(self, windows: Sequence[MetricsWindow]) -> None:
        self._windows.extend(windows)

    def note_requests(self, windows: Sequence[MetricsWindow]) -> None:
        """Remember when each unit last had a request (any host's entry point, including
        windows about instances on other hosts, which ``record`` never gets)."""
        for w in windows:
            if w.requests > 0:
                key = (w.apartment, w.unit)
                self._last_request[key] = max(self._last_request.get(key, 0.0), w.end)

    def last_request(self, apartment: str, unit: str) -> float:
        """End of the latest window with a request for the unit on any host (0: none since
        this coordinator started); kept apart from the windows, which are dropped."""
        return self._last_request.get((apartment, unit), 0.0)

    def windows(
        self, apartment: str, unit: str, version: str = "", since: float = 0.0
    ) -> list[MetricsWindow]:
        """The unit's windows (of ``version`` when given) that ended after ``since``."""
        return [
            w for w in self._windows
            if w.apartment == apartment and w.unit == unit
            and (not version or w.version == version) and w.end > since
        ]
