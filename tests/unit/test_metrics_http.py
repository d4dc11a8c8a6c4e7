"""The metrics endpoint's rules (loopback or TLS) and its answers, without a socket."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from common.metrics_http import (
    MetricsEndpoint,
    MetricsServer,
    check_metrics_listen,
    endpoint_problems,
)


@pytest.mark.parametrize("value", ["", "127.0.0.1:7401", "[::1]:0", "localhost:9"])
def test_listen_may_be_off_or_host_port(value: str) -> None:
    assert check_metrics_listen(value) is None


@pytest.mark.parametrize("value", ["7401", "127.0.0.1", "127.0.0.1:http", "h:70000"])
def test_listen_that_is_not_host_port_is_refused(value: str) -> None:
    assert "is not host:port" in (check_metrics_listen(value) or "")


@pytest.mark.parametrize("listen", ["127.0.0.1:7401", "127.0.0.5:0", "[::1]:7402",
                                    "localhost:7401", ""])
def test_loopback_needs_no_tls(listen: str) -> None:
    assert endpoint_problems(listen, "", "", "") == []


@pytest.mark.parametrize("listen", ["0.0.0.0:7401", "192.0.2.10:7401", "[::]:7402",
                                    "metrics.example:7401"])
def test_off_loopback_without_tls_is_refused(listen: str) -> None:
    assert endpoint_problems(listen, "", "", "") == [
        f"metrics_listen {listen!r} is not a loopback address: off loopback the endpoint "
        "needs TLS (metrics_tls_cert_file and metrics_tls_key_file)"]


def test_off_loopback_with_tls_files_is_accepted(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    cert, key, ca = (str(tmp_path / n) for n in ("cert.pem", "key.pem", "ca.pem"))
    assert endpoint_problems("0.0.0.0:7401", cert, key, ca) == []


def test_half_or_missing_tls_files_are_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    assert endpoint_problems("127.0.0.1:1", missing, "", "") == [
        "metrics_tls_cert_file and metrics_tls_key_file go together",
        f"metrics_tls_cert_file {missing!r} does not exist"]
    assert endpoint_problems("127.0.0.1:1", "", "", missing, prefix="web_") == [
        "web_tls_ca_file (scrapers' certificates) needs web_tls_cert_file and "
        "web_tls_key_file", f"web_tls_ca_file {missing!r} does not exist"]


def server(health: Any = None) -> MetricsServer:
    registry = CollectorRegistry(auto_describe=False)
    Counter("landlord_test_things", "things", registry=registry).inc(3)
    return MetricsServer(MetricsEndpoint("127.0.0.1:0"), registry, health=health)


def head(line: str) -> bytes:
    return f"{line}\r\nHost: x\r\n\r\n".encode()


async def test_metrics_are_answered_in_the_text_format() -> None:
    status, content_type, body = await server().answer(head("GET /metrics?x=1 HTTP/1.1"))
    assert status == "200 OK"
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"landlord_test_things_total 3.0" in body


async def test_health_is_200_when_healthy_and_503_otherwise() -> None:
    answers: list[tuple[bool, Mapping[str, Any]]] = [(True, {"docker": True}),
                                                     (False, {"docker": False})]

    async def health() -> tuple[bool, Mapping[str, Any]]:
        return answers.pop(0)

    endpoint = server(health)
    status, content_type, body = await endpoint.answer(head("GET /healthz HTTP/1.1"))
    assert (status, content_type) == ("200 OK", "application/json")
    assert json.loads(body) == {"healthy": True, "docker": True}
    status, _, body = await endpoint.answer(head("GET /healthz HTTP/1.1"))
    assert status == "503 Service Unavailable"
    assert json.loads(body) == {"healthy": False, "docker": False}


async def test_other_paths_methods_and_garbage_are_refused() -> None:
    endpoint = server()
    assert (await endpoint.answer(head("GET /healthz HTTP/1.1")))[0] == "404 Not Found"
    assert (await endpoint.answer(head("GET / HTTP/1.1")))[0] == "404 Not Found"
    assert (await endpoint.answer(head("POST /metrics HTTP/1.1")))[0] == \
        "405 Method Not Allowed"
    assert (await endpoint.answer(b"\x16\x03\x01garbage\r\n\r\n"))[0] == "400 Bad Request"
