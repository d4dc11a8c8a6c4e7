"""The demo app without Docker: knob parsing, the counter, and the process itself."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

from tests.support import eventually

APP_PATH = Path(__file__).resolve().parents[2] / "examples" / "demo-app" / "app.py"


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_app", APP_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_app"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


app = _load_app()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --- knobs ---------------------------------------------------------------------------


def test_defaults() -> None:
    config = app.parse_config({})
    assert config.port == 8080
    assert config.bind == "127.0.0.1"
    assert config.error_rate == 0.0
    assert config.latency_ms == 0.0
    assert config.leak_mb_per_min == 0.0
    assert config.crash_after_s is None
    assert config.state_dir is None
    assert config.instance_id is None
    assert config.host_id == socket.gethostname()
    assert config.log_requests is False


def test_knobs_are_read() -> None:
    config = app.parse_config({
        "VERSION": "1.2.3", "PORT": "9000", "BIND": "127.0.0.7", "HOST_ID": "h1",
        "INSTANCE_ID": "i-9", "ERROR_RATE": "0.25", "LATENCY_MS": "40",
        "LEAK_MB_PER_MIN": "3", "CRASH_AFTER_S": "1.5", "STATE_DIR": "/tmp/x",
        "LOG_REQUESTS": "1",
    })
    assert (config.version, config.port, config.bind) == ("1.2.3", 9000, "127.0.0.7")
    assert (config.host_id, config.instance_id) == ("h1", "i-9")
    assert (config.error_rate, config.latency_ms) == (0.25, 40.0)
    assert (config.leak_mb_per_min, config.crash_after_s) == (3.0, 1.5)
    assert config.state_dir == Path("/tmp/x")
    assert config.log_requests is True


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "http"), ("PORT", "70000"), ("PORT", "-1"), ("BIND", "localhost"),
        ("ERROR_RATE", "1.5"), ("ERROR_RATE", "-0.1"), ("ERROR_RATE", "nan"),
        ("ERROR_RATE", "lots"), ("LATENCY_MS", "-5"), ("LEAK_MB_PER_MIN", "x"),
        ("CRASH_AFTER_S", "0"), ("CRASH_AFTER_S", "soon"), ("LOG_REQUESTS", "maybe"),
    ],
)
def test_bad_knob_is_named(name: str, value: str) -> None:
    with pytest.raises(app.ConfigError, match=name):
        app.parse_config({name: value})


# --- counter -------------------------------------------------------------------------


def test_counter_persists_across_instances(tmp_path: Path) -> None:
    first = app.RequestCounter(tmp_path, writer="1.0.0")
    assert [first.increment() for _ in range(3)] == [1, 2, 3]
    second = app.RequestCounter(tmp_path, writer="2.0.0")
    assert second.current() == 3
    assert second.increment() == 4
    data = json.loads((tmp_path / "counter.json").read_text())
    assert data["count"] == 4 and data["updated_by"] == "2.0.0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter.json", "counter.lock"]


def test_counter_in_memory_without_state_dir() -> None:
    counter = app.RequestCounter(None, writer="1.0.0")
    assert [counter.increment() for _ in range(2)] == [1, 2]
    assert counter.current() == 2


def test_counter_shared_by_two_instances_loses_nothing(tmp_path: Path) -> None:
    blue = app.RequestCounter(tmp_path, writer="1.0.0")
    green = app.RequestCounter(tmp_path, writer="2.0.0")

    def hammer(counter: Any) -> None:
        for _ in range(100):
            counter.increment()

    threads = [threading.Thread(target=hammer, args=(c,)) for c in (blue, green, blue, green)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert blue.current() == 400


def test_counter_refuses_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "counter.json").write_text('{"count": "many"}')
    with pytest.raises(ValueError, match="no valid count"):
        app.RequestCounter(tmp_path, writer="1.0.0")


# --- the process ---------------------------------------------------------------------


class RunningApp:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port


@pytest.fixture
def start_app() -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(**knobs: str) -> RunningApp:
        port = _free_port()
        env = {**os.environ, "PORT": str(port), "BIND": "127.0.0.1", **knobs}
        proc = subprocess.Popen(
            [sys.executable, str(APP_PATH)], env=env, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        started.append(proc)
        if knobs.get("PORT") is None:
            eventually(lambda: _get(port, "/healthz")[0] == 200, message="app answers")
        return RunningApp(proc, port)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_bad_knob_exits_2_with_message(start_app: Any) -> None:
    running = start_app(PORT="eighty")
    _, err = running.proc.communicate(timeout=10)
    assert running.proc.returncode == 2
    assert "PORT='eighty' is not an integer" in err


def test_serves_version_count_and_health(start_app: Any) -> None:
    running = start_app(VERSION="3.1.4", HOST_ID="host-x", INSTANCE_ID="inst-1")
    assert _get(running.port, "/") == (
        200, {"version": "3.1.4", "host": "host-x", "instance": "inst-1", "count": 1}
    )
    assert _get(running.port, "/")[1]["count"] == 2
    assert _get(running.port, "/healthz") == (200, {"status": "ok", "version": "3.1.4"})
    assert _get(running.port, "/nope")[0] == 404


def test_error_rate_one_fails_root_but_not_health(start_app: Any) -> None:
    running = start_app(ERROR_RATE="1")
    assert [_get(running.port, "/")[0] for _ in range(10)] == [500] * 10
    assert _get(running.port, "/healthz")[0] == 200


def test_sigterm_finishes_in_flight_request_and_exits_0(start_app: Any) -> None:
    running = start_app(LATENCY_MS="1500")
    results: list[tuple[int, dict[str, Any]]] = []
    slow = threading.Thread(target=lambda: results.append(_get(running.port, "/")))
    slow.start()
    eventually(lambda: _get(running.port, "/state")[1]["in_flight"] == 2,
               message="slow request in flight")
    running.proc.send_signal(signal.SIGTERM)
    _, err = running.proc.communicate(timeout=15)
    slow.join(timeout=15)
    assert running.proc.returncode == 0, err
    assert results and results[0][0] == 200
    assert "SIGTERM received" in err
    with pytest.raises(ConnectionRefusedError):
        _get(running.port, "/healthz")


def test_crash_after_exits_non_zero(start_app: Any) -> None:
    running = start_app(CRASH_AFTER_S="0.5")
    _, err = running.proc.communicate(timeout=15)
    assert running.proc.returncode == app.EXIT_CRASH
    assert "CRASH_AFTER_S" in err


def test_leak_grows_resident_memory(start_app: Any) -> None:
    running = start_app(LEAK_MB_PER_MIN="1200")  # 20 MiB a second
    process = psutil.Process(running.proc.pid)
    baseline = process.memory_info().rss
    eventually(lambda: process.memory_info().rss - baseline > 30 * 1024 * 1024,
               timeout=20, interval=0.2, message="RSS grew by 30 MiB")
    assert _get(running.port, "/state")[1]["leaked_bytes"] >= 20 * 1024 * 1024


def test_downloads_and_uploads_bytes(start_app: Any) -> None:
    running = start_app()
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        conn.request("GET", "/bytes?n=200000")
        reply = conn.getresponse()
        assert (reply.status, len(reply.read())) == (200, 200_000)
        conn.request("POST", "/upload", body=b"y" * 300_000)
        reply = conn.getresponse()
        assert (reply.status, json.loads(reply.read())) == (200, {"received": 300_000})
        conn.request("GET", "/bytes?n=lots")  # the same connection: bodies were read
        reply = conn.getresponse()
        assert reply.status == 400 and b"byte count" in reply.read()
    finally:
        conn.close()
