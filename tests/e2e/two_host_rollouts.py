"""Helpers of the two-host real-cluster rollout tests (backports, sticky canaries): every
version runs the demo app image 1.0.0 answering as itself, in apartment ``e2e`` and
building ``demo``, two replicas."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from local_cluster.images import demo_image

from common.gen.landlord.v1 import admin_pb2, types_pb2
from tests.e2e.real_cluster import RealCluster
from tests.e2e.real_load import list_hosts, real_cluster, seconds, serving, unit_spec
from tests.support import eventually

APARTMENT = "e2e"
SETTINGS = {"heartbeat_interval": 2.0, "liveness_grace": 10.0, "stop_grace": 2.0}


def spec(unit: str, version: str, port: int) -> types_pb2.UnitSpec:
    """The demo app (image 1.0.0) answering as ``version``."""
    found = unit_spec(APARTMENT, unit, version, port, env={"VERSION": version})
    found.image = demo_image("1.0.0")
    return found


def canary(unit: str, version: str, steps: tuple[int, ...], *, sticky: bool | None = None,
           monitor: float = 3.0) -> admin_pb2.DeployRequest:
    request = admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=version,
                                      building="demo", replicas=2,
                                      strategy=types_pb2.STRATEGY_CANARY)
    request.canary.steps.extend(steps)
    request.canary.monitor.CopyFrom(seconds(monitor))
    request.canary.step_delay.CopyFrom(seconds(0.3))
    request.canary.inconclusive_deadline.CopyFrom(seconds(30))
    request.criteria.max_error_rate = 0.05
    request.criteria.min_requests = 5
    if sticky is not None:
        request.sticky = sticky
    return request


def rollout(admin: Any, unit: str) -> Any:
    """The unit's active or latest rollout (RolloutInfo)."""
    return admin.GetRollout(admin_pb2.GetRolloutRequest(apartment=APARTMENT, unit=unit),
                            timeout=5)


def stable_version(admin: Any, unit: str) -> str:
    request = admin_pb2.GetUnitRequest(apartment=APARTMENT, unit=unit)
    return str(admin.GetUnit(request, timeout=5).unit.stable_version)


@contextmanager
def alive_cluster(hosts: Mapping[str, str]) -> Iterator[RealCluster]:
    """A real cluster on ``hosts``, once every host is alive."""
    with real_cluster(settings=SETTINGS, hosts=hosts) as real:
        def alive() -> bool:
            found = list_hosts(real)
            assert len(found) == len(hosts) and all(h.status == "alive" for h in found), found
            return True

        eventually(alive, timeout=60, interval=0.5, message="every host alive")
        yield real


def run_first(admin: Any, unit: str, version: str, port: int,
              addresses: Mapping[str, str]) -> None:
    """The unit's first deploy (two instances), until every entry point serves it."""
    admin.Deploy(admin_pb2.DeployRequest(apartment=APARTMENT, unit=unit, version=version,
                                         building="demo", replicas=2), timeout=30)
    eventually(lambda: stable_version(admin, unit) == version, timeout=60, interval=0.5,
               message=f"{version} runs")
    eventually(lambda: serving(port, addresses.values()), timeout=30, interval=0.5,
               message="every entry point serves")
