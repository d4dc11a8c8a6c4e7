"""The bridge network bridged instances join, made idempotently through the Docker API.

Several agents may share one engine (simulated hosts on one machine): they share the one
network, and a second agent creating it at the same moment finds it made (409) and reuses
it. A network of that name with another subnet is refused, never changed: containers on it
would lose their addresses.
"""

from __future__ import annotations

from typing import Any

import docker.errors
from docker.types import IPAMConfig, IPAMPool

from common.errors import FailedPrecondition

__all__ = ["NETWORK_LABEL", "ensure_bridge_network", "network_subnets"]

NETWORK_LABEL = "landlord.network"


def network_subnets(network: dict[str, Any]) -> list[str]:
    """The subnets of a network as ``docker network inspect`` shows it."""
    configs = (network.get("IPAM") or {}).get("Config") or ()
    return [str(c.get("Subnet")) for c in configs if c.get("Subnet")]


def ensure_bridge_network(api: docker.APIClient, name: str, subnet: str,
                          interface: str) -> None:
    """Blocking: make sure the bridge network ``name`` exists on ``subnet``."""
    for attempt in range(2):
        same = [n for n in api.networks(names=[name]) if n.get("Name") == name]
        if same:
            subnets = network_subnets(same[0])
            if subnet not in subnets:
                raise FailedPrecondition(
                    f"Docker network {name} exists with subnet {', '.join(subnets) or 'none'},"
                    f" not {subnet}: remove it or set bridge_subnet to match",
                    target=name)
            return
        try:
            api.create_network(
                name, driver="bridge", check_duplicate=True,
                options={"com.docker.network.bridge.name": interface},
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet)]),
                labels={NETWORK_LABEL: "instances"})
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or attempt:
                raise
