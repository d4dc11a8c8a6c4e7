"""common.transport: settings are validated; channels are insecure unless TLS is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InvalidArgument
from common.transport import KeepaliveSettings, TlsSettings, create_channel


def test_tls_needs_both_halves_of_a_key_pair(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(InvalidArgument, match="both cert_file and key_file"):
        TlsSettings(cert_file=str(cert))
    with pytest.raises(InvalidArgument, match="does not exist"):
        TlsSettings(ca_file=str(tmp_path / "missing.pem"))
    assert not TlsSettings().enabled
    assert TlsSettings(ca_file=str(cert)).enabled


def test_keepalive_follows_the_grpc_rules() -> None:
    settings = KeepaliveSettings()
    server = dict(settings.server_options())
    client = dict(settings.client_options())
    assert server["grpc.keepalive_time_ms"] == 20_000
    assert server["grpc.http2.min_recv_ping_interval_without_data_ms"] == 10_000
    assert client["grpc.keepalive_time_ms"] >= server[
        "grpc.http2.min_recv_ping_interval_without_data_ms"]
    assert "grpc.max_connection_age_ms" not in server
    with pytest.raises(InvalidArgument, match="keepalive"):
        KeepaliveSettings(client_ping_interval_ms=1000)


async def test_channels_need_an_address() -> None:
    with pytest.raises(InvalidArgument):
        create_channel("nowhere")
    channel = create_channel("127.0.0.1:1")
    await channel.close()
