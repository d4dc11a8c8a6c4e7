"""What both daemons share with systemd and log readers: sd_notify and JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from pathlib import Path

from common.json_logs import JsonFormatter, setup_logging
from common.systemd_notify import notify, watchdog_interval, watchdog_pings


def test_notify_sends_one_datagram(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}) == 0.0
    assert watchdog_interval({}) == 0.0


def test_json_log_lines_have_one_set_of_keys_and_carry_extra_context() -> None:
    record = logging.makeLogRecord(
        {"msg": "hello %s", "args": ("x",), "levelname": "INFO", "name": "agent",
         "instance": "i1", "adopted": ("a", "b"), "path": Path("/x"), "created": 0.0,
         "msecs": 5.0}
    )
    line = json.loads(JsonFormatter("landlord-agent").format(record))
    assert line == {"time": "1970-01-01T00:00:00.005Z", "level": "info",
                    "service": "landlord-agent", "logger": "agent", "message": "hello x",
                    "instance": "i1", "adopted": ["a", "b"], "path": "/x"}


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord({"msg": "failed", "levelname": "ERROR", "name": "c"})
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter("landlord-coordinator").format(record))
    assert line["message"] == "failed" and "ValueError: boom" in line["exception"]


def test_setup_logging_replaces_the_root_handlers() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        setup_logging("warning", "json", "landlord-agent")
        assert root.level == logging.WARNING and len(root.handlers) == 1
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        setup_logging("INFO", "text", "landlord-agent")
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], root.level = saved, level


async def test_watchdog_pings_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        stop = asyncio.Event()
        started = time.monotonic()
        pings = asyncio.create_task(watchdog_pings(0.05, stop, {"NOTIFY_SOCKET": str(path)}))
        received: list[bytes] = []
        loop = asyncio.get_running_loop()
        while len(received) < 4:
            received.append(await asyncio.wait_for(loop.sock_recv(sock, 100), 2))
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(pings, 1)  # stop ends the loop at once, not after an interval
        assert received == [b"WATCHDOG=1"] * 4
        assert 0.14 < elapsed < 1.5  # the first at once, then one each interval
