"""The CLI looks for a coordinator where a coordinator started with defaults listens."""

from __future__ import annotations

from typer.main import get_command

from coordinator.cli.client import ClientSettings, parse_addresses
from coordinator.cli.main import app
from coordinator.config import load_config


def _cli_default_coordinator() -> str:
    command = get_command(app)
    option = next(p for p in command.params if p.name == "coordinator")
    return str(option.default)


def test_cli_default_address_is_where_a_default_coordinator_listens() -> None:
    listen = load_config([], env={"LANDLORD_COORDINATOR_INSECURE": "true"}).listen
    assert _cli_default_coordinator() == listen
    assert ClientSettings().addresses == (listen,)


def test_an_address_without_port_means_the_coordinator_default_port() -> None:
    port = load_config([], env={"LANDLORD_COORDINATOR_INSECURE": "true"}).listen.rsplit(":", 1)[1]
    assert parse_addresses("coord-1.example") == (f"coord-1.example:{port}",)
