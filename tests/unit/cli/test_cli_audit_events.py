"""`landlord events --type`: which events it keeps, and how an audit event reads."""

from __future__ import annotations

import pytest

from common.gen.landlord.v1 import types_pb2
from coordinator.cli.events import audit_line, line_of, type_matches


@pytest.mark.parametrize(("event_type", "wanted", "kept"), [
    ("audit", "audit", True),
    ("audit", None, True),
    ("rollout.step", "rollout", True),
    ("rollout.step", "rollout.step", True),
    ("rollout.step", "audit", False),
    ("auditing", "audit", False),
    ("instance.state", "instance.s", False),
])
def test_type_filter_keeps_the_type_and_its_family(event_type: str, wanted: str | None,
                                                   kept: bool) -> None:
    assert type_matches(event_type, wanted) is kept


def audit_event(**details: str) -> types_pb2.Event:
    return types_pb2.Event(sequence=7, type="audit", apartment="shop", unit="web",
                           version="1.2.0", message="ignored in the table",
                           details={"peer": "ipv4:127.0.0.1:5", **details})


def test_audit_line_shows_who_what_and_outcome() -> None:
    text = audit_line(audit_event(caller="admin/alice", method="Deploy", outcome="OK",
                                  strategy="canary")).plain
    assert "#7  audit  admin/alice  Deploy  shop/web@1.2.0  OK  " in text
    assert "strategy=canary" in text and "peer=ipv4:127.0.0.1:5" in text
    refused = audit_line(audit_event(caller="anonymous", method="Deploy",
                                     outcome="NOT_FOUND", error="no such version")).plain
    assert "anonymous  Deploy  shop/web@1.2.0  NOT_FOUND (no such version)" in refused
    assert "error=" not in refused and "caller=" not in refused


def test_other_events_keep_the_generic_line() -> None:
    event = types_pb2.Event(sequence=3, type="rollout.step", apartment="shop", unit="web",
                            message="step 1")
    assert "rollout.step  shop/web  step 1" in line_of(event).plain
