"""The metrics endpoint on real sockets: plain HTTP on loopback, HTTPS with and without
client certificates, and a taken port that leaves the daemon running without metrics."""

from __future__ import annotations

import logging
import socket
import ssl
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from common.identity import Identity, Role
from common.metrics_http import MetricsEndpoint, serve_metrics
from common.pki import LeafRequest, cert_pem, issue, issue_etcd_server, new_ca
from common.transport import TlsSettings
from tests.support.prometheus import scrape


def registry() -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    Gauge("landlord_test_up", "up", registry=found).set(1)
    return found


async def test_plain_http_on_loopback() -> None:
    server = await serve_metrics(MetricsEndpoint("127.0.0.1:0"), registry(), "test")
    assert server is not None
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        metrics = await scrape(server.url)
        assert metrics.value("landlord_test_up") == 1.0
    finally:
        await server.close()


async def test_a_taken_port_is_logged_and_leaves_metrics_off(
        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR):
            server = await serve_metrics(MetricsEndpoint(f"127.0.0.1:{port}"), registry(),
                                         "test")
    assert server is None
    assert f"test metrics endpoint off: cannot listen on 127.0.0.1:{port}" in caplog.text


async def test_off_is_off() -> None:
    assert await serve_metrics(MetricsEndpoint(""), registry(), "test") is None


def _pki(tmp_path: Path) -> dict[str, Path]:
    now = datetime.now(UTC)
    ca = new_ca("metrics test CA", now)
    server = issue_etcd_server(ca, "metrics", now)
    scraper = issue(ca, LeafRequest(Identity(Role.VIEWER, "prometheus")), now)
    files = {"ca": cert_pem(ca.cert), "cert": server.cert_pem, "key": server.key_pem,
             "client_cert": scraper.cert_pem, "client_key": scraper.key_pem}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


async def test_https_with_client_certificates(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    tls = TlsSettings(ca_file=str(pki["ca"]), cert_file=str(pki["cert"]),
                      key_file=str(pki["key"]))
    server = await serve_metrics(MetricsEndpoint("127.0.0.1:0", tls), registry(), "test")
    assert server is not None
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trusting = ssl.create_default_context(cafile=str(pki["ca"]))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            await scrape(server.url, trusting)  # no client certificate
        trusting.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
        metrics = await scrape(server.url, trusting)
        assert metrics.value("landlord_test_up") == 1.0
    finally:
        await server.close()


async def test_https_without_client_certificates(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    tls = TlsSettings(cert_file=str(pki["cert"]), key_file=str(pki["key"]))
    server = await serve_metrics(MetricsEndpoint("127.0.0.1:0", tls), registry(), "test")
    assert server is not None
    try:
        with pytest.raises(urllib.error.URLError):
            await scrape(server.url)  # the server's CA is not trusted
        metrics = await scrape(server.url, ssl.create_default_context(cafile=str(pki["ca"])))
        assert metrics.value("landlord_test_up") == 1.0
    finally:
        await server.close()


class Broken(Collector):
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("a collector's bug")


async def test_a_failing_collector_fails_the_scrape_visibly(
        caplog: pytest.LogCaptureFixture) -> None:
    broken = registry()
    broken.register(Broken())
    server = await serve_metrics(MetricsEndpoint("127.0.0.1:0"), broken, "test")
    assert server is not None
    try:
        with pytest.raises(AssertionError, match="answered 500"):
            await scrape(server.url)
        assert "answering b'GET /metrics HTTP/1.1' failed" in caplog.text
        assert "a collector's bug" in caplog.text
    finally:
        await server.close()
