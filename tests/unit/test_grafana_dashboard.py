"""contrib/grafana/landlord.json queries only metrics docs/metrics.md documents, so a
renamed metric cannot leave the dashboard silently empty."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "landlord.json"
METRIC = re.compile(r"\b((?:landlord|haproxy)_[a-z0-9_]+)")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in _expressions(value)]
    if isinstance(node, list):
        return [e for item in node for e in _expressions(item)]
    return []


def _documented() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"`((?:landlord|haproxy)_[a-z0-9_]+)`", text))


def test_every_queried_metric_is_documented() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = _expressions(dashboard["panels"])
    assert len(expressions) >= 20
    documented = _documented()
    queried = {m for expr in expressions for m in METRIC.findall(expr)}
    base = {next((m.removesuffix(s) for s in HISTOGRAM_SERIES if m.endswith(s)), m)
            for m in queried}
    assert base - documented == set()


def test_panels_use_the_templated_data_source_and_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        box = panel["gridPos"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                 for y in range(box["y"], box["y"] + box["h"])}
        assert not cells & taken, panel["title"]
        assert box["x"] + box["w"] <= 24
        taken |= cells
