"""How an instance is attached to its host's network: one definition for the spec, the
stream, the agent and the CLI.

- ``bridge``: its own network namespace on the agent's bridge network; the service port
  is published on the host's advertise address. The instance cannot reach anything the
  host serves on loopback (etcd, the coordinator, the agent, other instances' ports).
- ``host``: the host's network namespace, bound to the advertise address (what every
  instance did before bridging existed). Only for a unit that asks for it.

A spec leaves the mode unset (``""``) unless the unit chose one; an unset mode runs as
``DEFAULT_NETWORK_MODE`` and is left out of the version's checksum, so versions published
before the field existed keep theirs.
"""

from __future__ import annotations

from enum import StrEnum

from common.errors import InvalidArgument
from common.input_bounds import quoted

__all__ = ["DEFAULT_NETWORK_MODE", "NetworkMode", "effective_mode", "parse_network_mode"]


class NetworkMode(StrEnum):
    UNSET = ""
    BRIDGE = "bridge"
    HOST = "host"


DEFAULT_NETWORK_MODE = NetworkMode.BRIDGE
"""What an unset mode runs as: isolated unless a unit asks for the host's network."""


def parse_network_mode(value: object, name: str = "network_mode") -> NetworkMode:
    """The mode ``value`` names (``""``, ``bridge`` or ``host``); InvalidArgument else."""
    try:
        return NetworkMode(value)  # type: ignore[arg-type]  # refused below if not str
    except ValueError:
        raise InvalidArgument(f"{name} must be 'bridge' or 'host' (or unset), got"
                              f" {quoted(value)}",
                              field=name) from None


def effective_mode(mode: NetworkMode) -> NetworkMode:
    """The mode an instance runs in: its own, or the default when unset."""
    return mode or DEFAULT_NETWORK_MODE
