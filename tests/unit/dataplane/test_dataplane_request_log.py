from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.dataplane.request_log import (
    RequestLogReceiver,
    RequestRecord,
    is_error,
    parse_log_line,
)


def line(**overrides: object) -> bytes:
    doc = {
        "u": "web",
        "b": "be.web",
        "s": "a",
        "v": "1.0.0",
        "st": 200,
        "ta": 12,
        "tr": 10,
        "ts": "--",
    }
    doc.update(overrides)
    return json.dumps(doc).encode() + b"\n"


def test_a_normal_request() -> None:
    record = parse_log_line(line())
    assert record is not None
    assert (record.unit, record.version, record.instance, record.status) == (
        "web",
        "1.0.0",
        "a",
        200,
    )
    assert record.latency_ms == 12.0 and not record.error and not record.pinned


def test_pinned_and_serverless_requests() -> None:
    pinned = parse_log_line(line(b="pin1.web"))
    assert pinned is not None and pinned.pinned
    nosrv = parse_log_line(line(s="<NOSRV>", v="-", st=503, ts="SC"))
    assert nosrv is not None
    assert (nosrv.instance, nosrv.version, nosrv.error) == ("", "", True)


def test_lines_that_are_not_requests_or_not_json() -> None:
    assert parse_log_line(line(s="<NOSRV>", st=-1, ts="CR")) is None
    assert parse_log_line(b"<134>Nov 26 haproxy[1]: Server be.web/a is DOWN") is None
    assert parse_log_line(b'{"u":"web"}') is None
    negative = parse_log_line(line(ta=-1))
    assert negative is not None and negative.latency_ms is None


@pytest.mark.parametrize(
    ("status", "termination", "error"),
    [
        (200, "--", False),
        (404, "--", False),
        (200, "CD", False),  # the client went away after its answer started: not the server
        (500, "--", True),
        (503, "SC", True),
        (-1, "CH", True),  # no answer at all
        (200, "SD", True),  # the server broke the response off
        (200, "sD", True),
        (502, "PH", True),
    ],
)
def test_error_classification(status: int, termination: str, error: bool) -> None:
    assert is_error(status, termination) is error


def test_receiver_counts_good_and_bad_lines() -> None:
    seen: list[RequestRecord] = []
    receiver = RequestLogReceiver([Path("/nonexistent/r.sock")], seen.append)  # never bound
    receiver.handle(line() + line(st=500))
    receiver.handle(b"garbage\n")
    assert receiver.received == 2 and receiver.malformed == 1
    assert [r.status for r in seen] == [200, 500]
